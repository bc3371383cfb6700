import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import type { Client, ImageImportOptions, ProgressMessage } from "../client/client.js";
import { clientOf, collect, forEachName, print, printItems } from "./common.js";
import { ExitError, UsageError } from "./errors.js";
import { formatList, IMAGE_HEADERS, IMAGE_TABLE, imageRows } from "./format.js";
import { checkTagSource, parseImageReference, tagTarget } from "./reference.js";
import { parseFilters } from "./requests.js";
import { parseTemplate } from "./template.js";

const IMAGE_TABLE_DIGESTS =
  "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

/** src/cli/ under tsx and dist/cli/ when built are both two levels below the repository root. */
/** How long a failed busybox import waits to learn whether the script's own failure caused it. */
const SCRIPT_EXIT_GRACE_MS = 500;

const BUSYBOX_SCRIPT = fileURLToPath(new URL("../../scripts/busybox-image.sh", import.meta.url));

/**
 * `image …` and docker's top-level shortcuts for it (`images`, `import`, `rmi`, `tag`). Commander
 * cannot mount one command in two places, so each is built twice by the same function.
 */
export function registerImages(program: Command): void {
  const image = program.command("image").description("Manage images");
  addImport(image.command("import"));
  addList(image.command("ls").alias("list"));
  addRemove(image.command("rm").alias("remove"));
  addInspect(image.command("inspect"));
  addTag(image.command("tag"));
  addBusybox(image.command("busybox"));

  addImport(program.command("import"));
  addList(program.command("images"));
  addRemove(program.command("rmi"));
  addTag(program.command("tag"));
}

function addImport(cmd: Command): void {
  cmd
    .description("Import the contents from a tarball to create a filesystem image")
    .usage("[OPTIONS] file|- [REPOSITORY[:TAG]]")
    .argument("<file>", "tarball to import, or - for standard input")
    .argument("[reference]", "REPOSITORY[:TAG] of the new image")
    .option("-c, --change <CHANGE>", "apply Dockerfile instruction to the created image", collect)
    .option("-m, --message <MESSAGE>", "set commit message for imported image")
    .option("--platform <PLATFORM>", "set platform if server is multi-platform capable")
    .action(async (file: string, reference: string | undefined, opts, command: Command) => {
      const target = reference ? importTarget(reference) : {};
      const tar = await openTarball(file);
      await clientOf(command).imageImport(tar, {
        ...target,
        message: opts.message,
        changes: opts.change,
        platform: opts.platform,
        onProgress: printProgress,
      });
    });
}

/** Docker checks REPOSITORY[:TAG] before it sends anything; the daemon stores the familiar name. */
export function importTarget(reference: string): Pick<ImageImportOptions, "repo" | "tag"> {
  const ref = parseImageReference(reference);
  // A digest is the daemon's to refuse, with its own words, so the reference goes as typed.
  if (ref.digest) return { repo: reference };
  return { repo: ref.name, tag: ref.tag };
}

/** docker import's output: every status line of the daemon's progress stream, the id last. */
function printProgress(m: ProgressMessage): void {
  // docker drops progress bars when its output is not a terminal; ctnet never draws them.
  if (m.progress) return;
  print(`${m.id ? `${m.id}: ` : ""}${m.status ?? ""}`);
}

async function openTarball(file: string): Promise<NodeJS.ReadableStream> {
  if (file === "-") return process.stdin;
  try {
    // Opened before the request, so that a missing file fails like docker's os.Open, not mid-upload.
    return (await open(file)).createReadStream();
  } catch (err) {
    const reason = /^[A-Z]+: ([^,]+)/.exec((err as Error).message)?.[1] ?? (err as Error).message;
    throw new UsageError(`open ${file}: ${reason}`);
  }
}

function addList(cmd: Command): void {
  cmd
    .description("List images")
    .argument("[reference]", "REPOSITORY[:TAG] to match")
    .option("-a, --all", "show all images (default hides intermediate images)")
    .option("--digests", "show digests")
    .option("-f, --filter <FILTER>", "filter output based on conditions provided", collect)
    .option(
      "--format <FORMAT>",
      "format output using a custom template: 'table', 'table TEMPLATE', 'json', or TEMPLATE",
    )
    .option("--no-trunc", "don't truncate output")
    .option("-q, --quiet", "only show image IDs")
    .action(async (reference: string | undefined, opts, command: Command) => {
      const filters = parseFilters(opts.filter);
      if (reference) filters.reference = [...(filters.reference ?? []), reference];
      const images = await clientOf(command).imageList({ all: opts.all, filters });
      const rows = imageRows(images, opts.trunc === false, Date.now());
      const format = opts.quiet ? "{{.ID}}" : opts.format;
      const table = opts.digests ? IMAGE_TABLE_DIGESTS : IMAGE_TABLE;
      process.stdout.write(formatList(rows, format, table, IMAGE_HEADERS));
    });
}

function addRemove(cmd: Command): void {
  cmd
    .description("Remove one or more images")
    .argument("<image...>")
    .option("-f, --force", "force removal of the image")
    .option("--no-prune", "do not delete untagged parents")
    .action(async (names: string[], opts, command: Command) => {
      const client = clientOf(command);
      await forEachName(names, async (name) => {
        const items = await client.imageRemove(name, { force: opts.force, noPrune: opts.prune === false });
        for (const item of items ?? []) {
          if (item.Untagged) print(`Untagged: ${item.Untagged}`);
          if (item.Deleted) print(`Deleted: ${item.Deleted}`);
        }
      });
    });
}

function addInspect(cmd: Command): void {
  cmd
    .description("Display detailed information on one or more images")
    .argument("<image...>")
    .option("-f, --format <TEMPLATE>", "format output using a Go template, or 'json'")
    .action(async (names: string[], opts, command: Command) => {
      const client = clientOf(command);
      // docker's 'json' format is its default output.
      const tmpl = opts.format && opts.format !== "json" ? parseTemplate(opts.format) : undefined;
      const found: unknown[] = [];
      await forEachName(names, async (name) => {
        found.push(await client.imageInspect(name));
      });
      printItems(found, tmpl);
    });
}

function addTag(cmd: Command): void {
  cmd
    .description("Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    .usage("SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]")
    .argument("<source>")
    .argument("<target>")
    .action(async (source: string, target: string, _opts, command: Command) => {
      checkTagSource(source);
      const { repo, tag } = tagTarget(target);
      await clientOf(command).imageTag(source, repo, tag);
    });
}

function addBusybox(cmd: Command): void {
  cmd
    .description("Import a small busybox image made from the host's busybox-static (for demos and tests)")
    .argument("[reference]", "REPOSITORY[:TAG] of the new image", "busybox")
    .action(async (reference: string, _opts, command: Command) => {
      await importBusybox(clientOf(command), importTarget(reference));
    });
}

async function importBusybox(
  client: Client,
  target: Pick<ImageImportOptions, "repo" | "tag">,
): Promise<void> {
  // The script is POSIX sh; its own stderr (why busybox is missing, say) goes straight to the user.
  const child = spawn("sh", [BUSYBOX_SCRIPT, "-"], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  const scriptFailed = (code: number) => new ExitError(`busybox-image.sh failed (exit status ${code})`, 1);
  try {
    await client.imageImport(child.stdout, {
      ...target,
      changes: ['CMD ["sh"]'],
      onProgress: printProgress,
    });
  } catch (err) {
    // A script that failed cut the upload short, and its failure is the one that explains the
    // import's; a script still running is blocked on a pipe nobody reads any more.
    const code = await Promise.race([exited, delay(SCRIPT_EXIT_GRACE_MS, undefined, { ref: false })]);
    if (code === undefined) child.kill();
    else if (code !== 0) throw scriptFailed(code);
    throw err;
  }
  const code = await exited;
  if (code !== 0) throw scriptFailed(code);
}
