import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
} from "node:fs";
import { join } from "node:path";
import { finished, type Readable } from "node:stream";
import { syncDir, writeFileAtomic } from "../atomic-file.js";
import { ConflictError, InvalidParameterError, NotFoundError, SystemError } from "../errors.js";
import { type ImageConfig, parseChanges } from "./changes.js";
import { formatReference, ID_PREFIX, IMAGE_ID, parseReference, repoTagReference } from "./reference.js";

export interface ImageRecord {
  /** "sha256:" + 64 hex digits: the digest of the image's config, as Docker's image ids */
  id: string;
  /** familiar "name:tag" references, e.g. "busybox:latest", "local/busybox:v1" */
  repoTags: string[];
  /** RFC 3339 */
  created: string;
  /** bytes of the unpacked files */
  size: number;
  /** `docker import --message` */
  comment: string;
  architecture: string;
  os: string;
  /** one layer: "sha256:" + the digest of the archive exactly as it was uploaded */
  layers: string[];
  config: ImageConfig;
}

export interface ImportOptions {
  /** repository, may carry the tag ("local/busybox:v1"); none makes a dangling image */
  repo?: string;
  tag?: string;
  message?: string;
  /** `docker import --change` instructions: CMD, ENTRYPOINT, ENV, WORKDIR */
  changes?: string[];
}

/** Docker's answer to an image delete, one item per untagged reference or deleted object. */
export type ImageDeleteItem = { Untagged: string } | { Deleted: string };

/** Says which container, if any, uses an image (so that removing it must be forced). */
export type ImageInUse = (imageId: string) => string | undefined;

/** The record file: `seq` orders writes, so that a tag found on two images after a crash goes to the newer write. */
interface StoredImage {
  seq: number;
  image: ImageRecord;
}

/** Compressed archives as `docker import` accepts them; GNU tar cannot detect compression on a pipe. */
const COMPRESSION: [Buffer, string][] = [
  [Buffer.from([0x1f, 0x8b]), "--gzip"],
  [Buffer.from("BZh"), "--bzip2"],
  [Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), "--xz"],
  [Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), "--zstd"],
];
const MAGIC_BYTES = 6;
const ARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ia32: "386",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};
export const HOST_ARCH = ARCH[process.arch] ?? process.arch;

/**
 * Images without a registry, under one directory:
 *
 *     tmp/import-XXXX/rootfs   an import being extracted (wiped at open)
 *     rootfs/<hex>/            an image's root filesystem, used read-only as an overlayfs lowerdir
 *     records/<hex>.json       its record (id, tags, config), written atomically
 *
 * An import extracts into `tmp/`, renames the tree to `rootfs/<hex>` and then writes the record:
 * the record's rename is the commit point. At open, trees without a record (an import or a delete
 * cut short) are removed, so an interrupted import leaves nothing behind.
 */
export class ImageStore {
  private readonly images = new Map<string, ImageRecord>();
  private readonly seqs = new Map<string, number>();
  private seq = 0;

  private constructor(private readonly root: string) {}

  static open(root: string): ImageStore {
    const store = new ImageStore(root);
    rmSync(store.dir("tmp"), { recursive: true, force: true });
    for (const d of ["tmp", "rootfs", "records"]) mkdirSync(store.dir(d), { recursive: true, mode: 0o700 });
    store.load();
    return store;
  }

  private dir(...parts: string[]): string {
    return join(this.root, ...parts);
  }

  private load(): void {
    for (const file of readdirSync(this.dir("records"))) {
      const path = this.dir("records", file);
      const hex = file.slice(0, -".json".length);
      if (!file.endsWith(".json") || !IMAGE_ID.test(hex)) {
        rmSync(path, { force: true });
        continue;
      }
      let stored: StoredImage;
      try {
        stored = JSON.parse(readFileSync(path, "utf8")) as StoredImage;
      } catch (err) {
        throw new SystemError(`image record ${path} is unreadable: ${(err as Error).message}`);
      }
      // Only a hand-made mess gets here (the tree is in place before its record is written).
      if (!existsSync(this.dir("rootfs", hex))) {
        unlinkSync(path);
        continue;
      }
      this.images.set(stored.image.id, stored.image);
      this.seqs.set(stored.image.id, stored.seq);
      this.seq = Math.max(this.seq, stored.seq);
    }
    for (const hex of readdirSync(this.dir("rootfs"))) {
      if (!this.images.has(`sha256:${hex}`))
        rmSync(this.dir("rootfs", hex), { recursive: true, force: true });
    }
    this.repairTags();
  }

  /** A tag moves by writing its new image, then its old one: after a crash between the two, the newer write wins. */
  private repairTags(): void {
    const owner = new Map<string, ImageRecord>();
    const byAge = [...this.images.values()].sort(
      (a, b) => (this.seqs.get(b.id) ?? 0) - (this.seqs.get(a.id) ?? 0),
    );
    for (const img of byAge) {
      const kept = img.repoTags.filter((t) => !owner.has(t));
      for (const t of kept) owner.set(t, img);
      if (kept.length !== img.repoTags.length) this.save({ ...img, repoTags: kept });
    }
  }

  list(): ImageRecord[] {
    return [...this.images.values()]
      .sort((a, b) => Date.parse(b.created) - Date.parse(a.created))
      .map((i) => structuredClone(i));
  }

  /**
   * Finds an image as Docker does: by full id (with or without "sha256:"), by name[:tag] (tag
   * "latest" by default), then by a unique id prefix. Unknown, malformed and ambiguous refs give undefined.
   */
  find(ref: string): ImageRecord | undefined {
    const img = this.lookup(ref);
    return img && structuredClone(img);
  }

  /** find, or Docker's "No such image" error. */
  get(ref: string): ImageRecord {
    const img = this.find(ref);
    if (!img) throw new NotFoundError(`No such image: ${displayRef(ref)}`);
    return img;
  }

  private lookup(ref: string): ImageRecord | undefined {
    const full = IMAGE_ID.exec(ref);
    if (full) return this.images.get(`sha256:${full[1]}`);
    let wanted: string | undefined;
    try {
      wanted = formatReference(parseReference(ref));
    } catch {
      // not a name; it may still be an id prefix such as "sha256:3e2f"
    }
    if (wanted) {
      for (const img of this.images.values()) if (img.repoTags.includes(wanted)) return img;
    }
    const prefix = ID_PREFIX.exec(ref);
    if (!prefix) return undefined;
    const matches = [...this.images.values()].filter((i) => i.id.startsWith(`sha256:${prefix[1]}`));
    return matches.length === 1 ? matches[0] : undefined;
  }

  /** The read-only tree a container of this image uses as its overlayfs lowerdir. */
  rootfsPath(img: ImageRecord | string): string {
    const id = typeof img === "string" ? img : img.id;
    return this.dir("rootfs", hexOf(id));
  }

  /**
   * Imports a root filesystem archive (tar, optionally gzip/bzip2/xz/zstd compressed). On failure
   * nothing is kept and `stream` is left paused where reading stopped (an HTTP server may still
   * want to drain it before answering).
   */
  async importTar(stream: Readable, opts: ImportOptions = {}): Promise<ImageRecord> {
    // Bad parameters fail before a byte is read.
    const config = parseChanges(opts.changes ?? []);
    const ref = opts.repo ? formatReference(repoTagReference(opts.repo, opts.tag)) : undefined;
    if (!opts.repo && opts.tag) throw new InvalidParameterError("a tag needs a repository");

    const staging = mkdtempSync(join(this.dir("tmp"), "import-"));
    try {
      const tree = join(staging, "rootfs");
      mkdirSync(tree);
      // The archive's "./" entry sets it, when there is one; an image root must be traversable.
      chmodSync(tree, 0o755);
      const layer = await extract(stream, tree);
      await syncFs(tree);
      const created = new Date().toISOString();
      // Docker's id is the digest of the image config, which names the layer's digest: two
      // imports of one archive are two images, as with Docker.
      const imageConfig = {
        architecture: HOST_ARCH,
        comment: opts.message ?? "",
        config,
        created,
        os: "linux",
        rootfs: { type: "layers", diff_ids: [layer] },
      };
      const id = `sha256:${createHash("sha256").update(JSON.stringify(imageConfig)).digest("hex")}`;
      if (!this.images.has(id)) {
        renameSync(tree, this.rootfsPath(id));
        this.save({
          id,
          repoTags: [],
          created,
          size: treeSize(this.rootfsPath(id)),
          comment: opts.message ?? "",
          architecture: HOST_ARCH,
          os: "linux",
          layers: [layer],
          config,
        });
      }
      if (ref) this.addTag(id, ref);
      return this.get(id);
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }

  /** `docker tag`: the reference moves to this image if another one had it. */
  tag(ref: string, repo: string, tag?: string): void {
    const img = this.get(ref);
    this.addTag(img.id, formatReference(repoTagReference(repo, tag)));
  }

  private addTag(id: string, ref: string): void {
    const img = this.images.get(id) as ImageRecord;
    if (img.repoTags.includes(ref)) return;
    const previous = [...this.images.values()].find((i) => i.repoTags.includes(ref));
    this.save({ ...img, repoTags: [...img.repoTags, ref] });
    if (previous) this.save({ ...previous, repoTags: previous.repoTags.filter((t) => t !== ref) });
  }

  /**
   * `docker rmi` semantics. By name: the tag goes; the image goes with its last tag. By id: all
   * its tags go with it, which needs force when they span several repositories. An image a
   * container uses is not removed without force; with force only its tags go and the image stays
   * (dangling) until no container uses it, because a container's overlay still reads it.
   */
  remove(ref: string, force: boolean, inUse: ImageInUse): ImageDeleteItem[] {
    const img = this.lookup(ref);
    if (!img) throw new NotFoundError(`No such image: ${displayRef(ref)}`);
    const user = inUse(img.id);
    const items: ImageDeleteItem[] = [];
    const byName = !isIdRef(ref, img);
    if (byName) {
      const name = formatReference(parseReference(ref));
      if (user && !force && img.repoTags.length === 1)
        throw new ConflictError(
          `conflict: unable to remove repository reference "${ref}" (must force) - container ${user.slice(0, 12)} is using its referenced image ${hexOf(img.id).slice(0, 12)}`,
        );
      this.save({ ...img, repoTags: img.repoTags.filter((t) => t !== name) });
      items.push({ Untagged: name });
      if (img.repoTags.length > 1) return items;
    } else {
      const repos = new Set(img.repoTags.map((t) => parseReference(t).name));
      if (!force && (repos.size > 1 || img.repoTags.length > 1))
        throw new ConflictError(
          `conflict: unable to delete ${hexOf(img.id).slice(0, 12)} (must be forced) - image is referenced in multiple repositories`,
        );
      if (user && !force)
        throw new ConflictError(
          `conflict: unable to delete ${hexOf(img.id).slice(0, 12)} (must be forced) - image is being used by container ${user.slice(0, 12)}`,
        );
      if (img.repoTags.length > 0) this.save({ ...img, repoTags: [] });
      for (const t of img.repoTags) items.push({ Untagged: t });
    }
    if (user) return items;
    this.delete(img);
    items.push({ Deleted: img.id }, ...img.layers.map((l) => ({ Deleted: l })));
    return items;
  }

  private delete(img: ImageRecord): void {
    // The record goes first: a crash before the tree is gone leaves an orphan tree that open removes.
    unlinkSync(this.recordPath(img.id));
    syncDir(this.dir("records"));
    this.images.delete(img.id);
    this.seqs.delete(img.id);
    rmSync(this.rootfsPath(img), { recursive: true, force: true });
  }

  private recordPath(id: string): string {
    return this.dir("records", `${hexOf(id)}.json`);
  }

  private save(img: ImageRecord): void {
    const seq = ++this.seq;
    writeFileAtomic(this.recordPath(img.id), JSON.stringify({ seq, image: img } satisfies StoredImage), {
      durable: true,
    });
    this.images.set(img.id, img);
    this.seqs.set(img.id, seq);
  }
}

const hexOf = (id: string) => id.replace(/^sha256:/, "");

/** Whether `ref` named the image by its id rather than by one of its tags (Docker's rule). */
function isIdRef(ref: string, img: ImageRecord): boolean {
  const prefix = ID_PREFIX.exec(ref);
  if (!prefix || !img.id.startsWith(`sha256:${prefix[1]}`)) return false;
  try {
    return !img.repoTags.includes(formatReference(parseReference(ref)));
  } catch {
    return true;
  }
}

/** Docker's "No such image" names a reference in full form (busybox:latest), other strings as given. */
function displayRef(ref: string): string {
  if (ID_PREFIX.test(ref)) return ref;
  try {
    return formatReference(parseReference(ref));
  } catch {
    return ref;
  }
}

/** tar does not flush what it writes; without this, a power cut could leave a committed image with empty files. */
function syncFs(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn("sync", ["--file-system", dir], { stdio: "ignore" });
    p.on("error", (err) => reject(new SystemError(`cannot run sync: ${err.message}`)));
    p.on("close", (code) =>
      code === 0 ? resolve() : reject(new SystemError(`sync --file-system ${dir} exited with ${code}`)),
    );
  });
}

/** Sum of the regular files' sizes, each hard-linked file once: what Docker reports as an image's size. */
function treeSize(dir: string): number {
  const seen = new Set<number>();
  let size = 0;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const st = lstatSync(join(entry.parentPath, entry.name));
    if (st.nlink > 1) {
      if (seen.has(st.ino)) continue;
      seen.add(st.ino);
    }
    size += st.size;
  }
  return size;
}

/**
 * Reads the first bytes without consuming them: they say whether the archive is compressed.
 * Resolves with fewer bytes only when the stream ended (and then everything was read).
 */
function peek(stream: Readable, n: number): Promise<{ head: Buffer; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const done = (err?: Error | null, ended = false) => {
      stream.off("readable", onReadable);
      stream.off("end", onEnd);
      stopWatching();
      if (err) return reject(err);
      const head = Buffer.concat(chunks);
      if (!ended && head.length > 0) stream.unshift(head);
      resolve({ head, ended });
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      // biome-ignore lint/suspicious/noAssignInExpressions: the stream read loop
      while ((chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        length += chunk.length;
        if (length >= n) return done();
      }
    };
    const onEnd = () => done(null, true);
    const stopWatching = finished(stream, { readable: true, writable: false }, (err) => {
      if (err) done(err);
    });
    stream.on("readable", onReadable);
    stream.on("end", onEnd);
  });
}

/** Unpacks the archive into `dir` with GNU tar; returns "sha256:" + the digest of the bytes received. */
async function extract(input: Readable, dir: string): Promise<string> {
  const { head, ended } = await peek(input, MAGIC_BYTES);
  if (ended) throw new InvalidParameterError(`invalid image archive: only ${head.length} bytes`);
  const compression = COMPRESSION.find(([magic]) => head.subarray(0, magic.length).equals(magic))?.[1];
  const args = [
    "--extract",
    "--file=-",
    `--directory=${dir}`,
    // Owners, modes and setuid bits are part of the image (containers expect root-owned files),
    // and uids are the image's own: never map them through the host's user names.
    "--same-owner",
    "--same-permissions",
    "--numeric-owner",
    ...(compression ? [compression] : []),
  ];
  // GNU tar already drops leading "/" and refuses ".." members and writes through symlinks.
  const tar = spawn("tar", args, { stdio: ["pipe", "ignore", "pipe"] });
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    let stderr = "";
    let failure: Error | undefined;
    let tarDone = false;
    let inputDone = false;
    let settled = false;
    const onData = (chunk: Buffer) => hash.update(chunk);
    const settle = () => {
      if (settled || !tarDone || (!failure && !inputDone)) return;
      settled = true;
      stopWatching();
      if (failure) reject(failure);
      else resolve(`sha256:${hash.digest("hex")}`);
    };
    const fail = (err: Error) => {
      failure ??= err;
      input.unpipe(tar.stdin);
      input.off("data", onData);
      input.pause();
      if (!tarDone) tar.kill("SIGKILL");
      settle();
    };
    tar.stderr.on("data", (c: Buffer) => {
      if (stderr.length < 4096) stderr += c.toString();
    });
    // EPIPE when tar stops early: its exit status says why.
    tar.stdin.on("error", () => {});
    tar.on("error", (err) => {
      tarDone = true;
      fail(new SystemError(`cannot run tar: ${err.message}`));
    });
    tar.on("close", (code, signal) => {
      tarDone = true;
      if (code !== 0) {
        fail(
          new InvalidParameterError(
            `invalid image archive: ${tarError(stderr) || `tar ended with ${code ?? signal}`}`,
          ),
        );
        return;
      }
      if (!inputDone) {
        // tar stops at the end-of-archive blocks; the digest still covers the whole upload.
        input.unpipe(tar.stdin);
        input.resume();
      }
      settle();
    });
    const stopWatching = finished(input, { readable: true, writable: false }, (err) => {
      if (err) {
        fail(new InvalidParameterError(`image upload interrupted: ${err.message}`));
        return;
      }
      inputDone = true;
      settle();
    });
    input.on("data", onData);
    input.pipe(tar.stdin);
  });
}

/** tar's own errors, without its notes on names it rewrote and its closing "Exiting with failure status". */
function tarError(stderr: string): string {
  return stderr
    .split("\n")
    .map((l) => l.replace(/^tar: /, "").trim())
    .filter((l) => l && !/^Exiting with failure status|^Error is not recoverable|^Removing leading/.test(l))
    .slice(0, 3)
    .join("; ");
}
