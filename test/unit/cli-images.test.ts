import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { UsageError } from "../../src/cli/errors.js";
import { formatList, humanSize, IMAGE_HEADERS, IMAGE_TABLE, imageRows } from "../../src/cli/format.js";
import { importTarget } from "../../src/cli/images.js";
import { checkTagSource, looksLikeImage, parseImageReference, tagTarget } from "../../src/cli/reference.js";
import { containerCreateBody } from "../../src/cli/requests.js";
import { Client, imagePath, ProgressError } from "../../src/client/client.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const ID = `sha256:${"3e2f21a89c".padEnd(64, "0")}`;
const OTHER = `sha256:${"b1c2d3e4f5".padEnd(64, "1")}`;

describe("image sizes as docker prints them", () => {
  it("uses powers of 1000 and three significant digits", () => {
    assert.equal(humanSize(4_260_000), "4.26MB");
    assert.equal(humanSize(1200), "1.2kB");
    assert.equal(humanSize(0), "0B");
    assert.equal(humanSize(999), "999B");
    assert.equal(humanSize(1000), "1kB");
    assert.equal(humanSize(123_456_789), "123MB");
    assert.equal(humanSize(2_000_000_000), "2GB");
  });

  it("keeps go-units' quirks: Go's %g switches to an exponent when rounding reaches 1000", () => {
    assert.equal(humanSize(999_999), "1e+03kB");
    assert.equal(humanSize(4_261_234, 4), "4.261MB");
  });
});

describe("image list output", () => {
  const now = Date.parse("2025-06-01T12:00:00Z");
  const images = [
    {
      Id: ID,
      RepoTags: ["busybox:latest", "local/busybox:v1", "localhost:5000/app"],
      Created: now / 1000 - 3 * 3600,
      Size: 4_260_000,
      SharedSize: -1,
      Containers: -1,
    },
    { Id: OTHER, RepoTags: [], Created: now / 1000 - 90, Size: 1200 },
  ];

  it("prints docker's legacy table: one row per tag, untagged images as <none>", () => {
    const out = formatList(imageRows(images, false, now), undefined, IMAGE_TABLE, IMAGE_HEADERS);
    assert.equal(
      out,
      [
        "REPOSITORY           TAG       IMAGE ID       CREATED         SIZE",
        "busybox              latest    3e2f21a89c00   3 hours ago     4.26MB",
        "local/busybox        v1        3e2f21a89c00   3 hours ago     4.26MB",
        "localhost:5000/app   <none>    3e2f21a89c00   3 hours ago     4.26MB",
        "<none>               <none>    b1c2d3e4f511   2 minutes ago   1.2kB",
        "",
      ].join("\n"),
    );
  });

  it("gives full ids with --no-trunc, and json lines with docker's keys in Go's order", () => {
    const rows = imageRows(images.slice(1), true, now);
    assert.equal(formatList(rows, "{{.ID}}", IMAGE_TABLE, IMAGE_HEADERS), `${OTHER}\n`);
    assert.deepEqual(Object.keys(JSON.parse(formatList(rows, "json", IMAGE_TABLE, IMAGE_HEADERS))), [
      "Containers",
      "CreatedAt",
      "CreatedSince",
      "Digest",
      "ID",
      "Repository",
      "SharedSize",
      "Size",
      "Tag",
      "UniqueSize",
      "VirtualSize",
    ]);
    assert.equal(rows[0]?.Containers, "N/A");
    assert.equal(rows[0]?.CreatedAt, "2025-06-01 11:58:30 +0000 UTC");
  });
});

describe("image references as the docker CLI parses them", () => {
  it("normalises to the familiar name and splits off tag and digest", () => {
    assert.deepEqual(parseImageReference("busybox"), { name: "busybox" });
    assert.deepEqual(parseImageReference("docker.io/library/busybox:1.36"), { name: "busybox", tag: "1.36" });
    assert.deepEqual(parseImageReference("index.docker.io/team/app"), { name: "team/app" });
    assert.deepEqual(parseImageReference("local/busybox:v1"), { name: "local/busybox", tag: "v1" });
    assert.deepEqual(parseImageReference("localhost:5000/app"), { name: "localhost:5000/app" });
    assert.deepEqual(parseImageReference("Registry.example/app:1.0"), {
      name: "Registry.example/app",
      tag: "1.0",
    });
    const digest = `sha256:${"a".repeat(64)}`;
    assert.deepEqual(parseImageReference(`app@${digest}`), { name: "app", digest });
  });

  it("refuses what docker refuses, with docker's words", () => {
    assert.throws(
      () => parseImageReference("Busybox"),
      new UsageError("invalid reference format: repository name (library/Busybox) must be lowercase"),
    );
    assert.throws(
      () => parseImageReference("a".repeat(64)),
      new UsageError(
        `invalid repository name (${"a".repeat(64)}), cannot specify 64-byte hexadecimal strings`,
      ),
    );
    for (const bad of ["/bin/sh", "./run.sh", "a::b", "app:", "-app", "app:-x", "a b"]) {
      assert.throws(() => parseImageReference(bad), new UsageError("invalid reference format"), bad);
    }
  });

  it("tells image names from host commands for run", () => {
    assert.ok(looksLikeImage("busybox"));
    assert.ok(looksLikeImage("sleep"));
    assert.ok(looksLikeImage(ID));
    assert.ok(!looksLikeImage("/bin/sleep"));
    assert.ok(!looksLikeImage("./script.sh"));
  });

  it("tags with latest by default, never with a digest", () => {
    assert.deepEqual(tagTarget("local/busybox"), { repo: "local/busybox", tag: "latest" });
    assert.deepEqual(tagTarget("docker.io/library/busybox:v2"), { repo: "busybox", tag: "v2" });
    assert.throws(
      () => tagTarget(`app@sha256:${"a".repeat(64)}`),
      new UsageError("refusing to create a tag with a digest reference"),
    );
    assert.throws(
      () => tagTarget("App"),
      new UsageError(
        'Error parsing reference: "App" is not a valid repository/tag: invalid reference format: repository name (library/App) must be lowercase',
      ),
    );
    checkTagSource(ID);
    checkTagSource("3e2f21a8");
    assert.throws(() => checkTagSource("Nope"), /Error parsing reference: "Nope"/);
  });

  it("sends import's repository and tag apart", () => {
    assert.deepEqual(importTarget("local/busybox:v1"), { repo: "local/busybox", tag: "v1" });
    assert.deepEqual(importTarget("busybox"), { repo: "busybox", tag: undefined });
    assert.throws(() => importTarget("Busybox"), UsageError);
  });
});

describe("run body with an image", () => {
  it("sends the image, and leaves Cmd out when the image's CMD applies", () => {
    const body = containerCreateBody({ image: "busybox", command: [], detach: true });
    assert.equal(body.Image, "busybox");
    assert.ok(!("Cmd" in body));
    const withCmd = containerCreateBody({ image: "busybox", command: ["sleep", "5"] });
    assert.deepEqual([withCmd.Image, withCmd.Cmd], ["busybox", ["sleep", "5"]]);
    assert.throws(() => containerCreateBody({ command: [] }), UsageError);
  });
});

interface Seen {
  method?: string;
  url?: string;
  contentType?: string;
  chunked: boolean;
  body: Buffer;
}

/** A daemon that knows one image, `local/busybox:v1`, and a container `c1` that is already running. */
function stubDaemon(seen: Seen[]): http.Server {
  return http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    seen.push({
      method: req.method,
      url: req.url,
      contentType: req.headers["content-type"],
      chunked: req.headers["transfer-encoding"] === "chunked",
      body,
    });
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname.replace(/^\/v1\.50/, "");
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(value));
    };
    if (path === "/images/create") {
      res.writeHead(200, { "Content-Type": "application/json" });
      if (url.searchParams.get("repo") === "broken") {
        res.end(
          `${JSON.stringify({ errorDetail: { message: "archive/tar: invalid tar header" }, error: "x" })}\n`,
        );
        return;
      }
      // Split mid-line, as a stream may arrive.
      const text = `${JSON.stringify({ status: "Importing" })}\n${JSON.stringify({ status: ID })}\n`;
      res.write(text.slice(0, 20));
      res.end(text.slice(20));
    } else if (path === "/images/json") {
      json(200, [
        { Id: ID, RepoTags: ["local/busybox:v1"], Created: Date.now() / 1000 - 30, Size: 4_260_000 },
      ]);
    } else if (path === "/images/local/busybox:v1/json") {
      json(200, { Id: ID, RepoTags: ["local/busybox:v1"], Config: { Cmd: ["sh"] } });
    } else if (path === "/images/local/busybox:v1" && req.method === "DELETE") {
      json(200, [{ Untagged: "local/busybox:v1" }, { Deleted: ID }]);
    } else if (path.startsWith("/images/") && req.method !== "POST") {
      json(404, { message: `No such image: ${decodeURIComponent(path.slice("/images/".length))}` });
    } else if (path === "/containers/create") {
      json(201, { Id: "c2".padEnd(64, "0"), Warnings: [] });
    } else if (path === "/containers/c1/start") {
      res.writeHead(304).end();
    } else if (path.endsWith("/wait")) {
      json(200, { StatusCode: path.includes("c1") ? 0 : 3, Error: null });
    } else if (path.startsWith("/containers/missing")) {
      json(404, { message: "No such container: missing" });
    } else {
      res.writeHead(204).end();
    }
  });
}

describe("image and container endpoints against a stub daemon", () => {
  let dir: string;
  let host: string;
  let server: http.Server;
  const seen: Seen[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ctnet-images-"));
    host = `unix://${join(dir, "d.sock")}`;
    server = stubDaemon(seen);
    await new Promise<void>((resolve) => server.listen(join(dir, "d.sock"), resolve));
  });

  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const ctnet = (...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "-H", host, ...args],
        { cwd: ROOT },
        (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
      );
    });

  it("keeps slashes and colons of image names in the path, escaping the rest", () => {
    assert.equal(imagePath("local/busybox:v1"), "/images/local/busybox:v1");
    assert.equal(imagePath("a b?"), "/images/a%20b%3F");
  });

  it("streams an import as a chunked tar body with repeated changes, resolving with the id", async () => {
    const client = new Client({ host });
    const progress: unknown[] = [];
    const tar = Readable.from([Buffer.from("part one "), Buffer.from("part two")]);
    const id = await client.imageImport(tar, {
      repo: "local/busybox",
      tag: "v1",
      message: "hi there",
      changes: ['CMD ["sh"]', "ENV A=1"],
      onProgress: (m) => progress.push(m),
    });
    assert.equal(id, ID);
    assert.deepEqual(progress, [{ status: "Importing" }, { status: ID }]);
    const req = seen.at(-1);
    assert.equal(
      req?.url,
      "/v1.50/images/create?fromSrc=-&repo=local%2Fbusybox&tag=v1&message=hi+there&changes=CMD+%5B%22sh%22%5D&changes=ENV+A%3D1",
    );
    assert.equal(req?.contentType, "application/x-tar");
    assert.ok(req?.chunked);
    assert.equal(req?.body.toString(), "part one part two");
  });

  it("fails an import on an error line with the daemon's message", async () => {
    const client = new Client({ host });
    await assert.rejects(
      client.imageImport(Readable.from([Buffer.from("x")]), { repo: "broken" }),
      new ProgressError("archive/tar: invalid tar header", undefined),
    );
  });

  it("builds list, tag, remove, restart and rename requests", async () => {
    const client = new Client({ host });
    await client.imageList({ all: true, filters: { dangling: ["true"] } });
    await client.imageTag("local/busybox:v1", "mine", "v2");
    assert.deepEqual(await client.imageRemove("local/busybox:v1", { force: true, noPrune: true }), [
      { Untagged: "local/busybox:v1" },
      { Deleted: ID },
    ]);
    await client.containerRestart("c1", { timeout: 3, signal: "SIGINT" });
    await client.containerRename("c1", "new name");
    assert.deepEqual(
      seen.slice(-5).map((s) => `${s.method} ${s.url}`),
      [
        "GET /v1.50/images/json?all=1&filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D",
        "POST /v1.50/images/local/busybox:v1/tag?repo=mine&tag=v2",
        "DELETE /v1.50/images/local/busybox:v1?force=1&noprune=1",
        "POST /v1.50/containers/c1/restart?t=3&signal=SIGINT",
        "POST /v1.50/containers/c1/rename?name=new+name",
      ],
    );
  });

  it("ctnet import prints the id and exits 0; a missing file fails like docker", async () => {
    const file = join(dir, "root.tar");
    writeFileSync(file, "not really a tar");
    const ok = await ctnet("import", "-c", 'CMD ["sh"]', "-m", "msg", file, "local/busybox:v1");
    assert.deepEqual(ok, { code: 0, stdout: `Importing\n${ID}\n`, stderr: "" });
    assert.equal(seen.at(-1)?.body.toString(), "not really a tar");
    const missing = await ctnet("image", "import", join(dir, "nope.tar"));
    assert.deepEqual(missing, {
      code: 1,
      stdout: "",
      stderr: `open ${join(dir, "nope.tar")}: no such file or directory\n`,
    });
    const broken = await ctnet("image", "import", file, "broken");
    assert.deepEqual([broken.code, broken.stderr], [1, "archive/tar: invalid tar header\n"]);
  });

  it("ctnet images, image ls -q, rmi and tag", async () => {
    const list = await ctnet("images");
    assert.equal(
      list.stdout,
      "REPOSITORY      TAG       IMAGE ID       CREATED          SIZE\n" +
        "local/busybox   v1        3e2f21a89c00   30 seconds ago   4.26MB\n",
    );
    assert.equal((await ctnet("image", "ls", "-q", "--no-trunc")).stdout, `${ID}\n`);
    const rmi = await ctnet("rmi", "local/busybox:v1", "missing");
    assert.deepEqual(rmi, {
      code: 1,
      stdout: `Untagged: local/busybox:v1\nDeleted: ${ID}\n`,
      stderr: "Error response from daemon: No such image: missing\n",
    });
    const tag = await ctnet("tag", "local/busybox:v1", "mine");
    assert.equal(tag.code, 0);
    assert.equal(seen.at(-1)?.url, "/v1.50/images/local/busybox:v1/tag?repo=mine&tag=latest");
    const inspect = await ctnet("image", "inspect", "-f", "{{.Config.Cmd}}", "local/busybox:v1");
    assert.equal(inspect.stdout, "[sh]\n");
  });

  it("run takes a known image as the image, anything else as a host command", async () => {
    await ctnet("run", "-d", "local/busybox:v1");
    let create = seen.findLast((s) => s.url?.startsWith("/v1.50/containers/create"));
    assert.deepEqual(
      [JSON.parse(create?.body.toString() ?? "{}").Image, JSON.parse(create?.body.toString() ?? "{}").Cmd],
      ["local/busybox:v1", undefined],
    );
    await ctnet("run", "-d", "sleep", "100");
    create = seen.findLast((s) => s.url?.startsWith("/v1.50/containers/create"));
    assert.deepEqual(
      [JSON.parse(create?.body.toString() ?? "{}").Image, JSON.parse(create?.body.toString() ?? "{}").Cmd],
      ["", ["sleep", "100"]],
    );
    // A path is never looked up as an image.
    const before = seen.length;
    await ctnet("run", "-d", "--image", "other", "/bin/sleep", "1");
    const sent = seen.slice(before).map((s) => s.url?.split("?")[0]);
    assert.ok(!sent.some((u) => u?.startsWith("/v1.50/images/")), String(sent));
    create = seen.findLast((s) => s.url?.startsWith("/v1.50/containers/create"));
    assert.deepEqual(JSON.parse(create?.body.toString() ?? "{}").Cmd, ["/bin/sleep", "1"]);
  });

  it("start prints a running container's name (304), wait prints exit codes, kill signals", async () => {
    assert.deepEqual(await ctnet("start", "c1"), { code: 0, stdout: "c1\n", stderr: "" });
    assert.deepEqual(await ctnet("wait", "c1", "c9"), { code: 0, stdout: "0\n3\n", stderr: "" });
    const kill = await ctnet("kill", "-s", "HUP", "c1", "missing");
    assert.deepEqual(kill, {
      code: 1,
      stdout: "c1\n",
      stderr: "Error response from daemon: No such container: missing\n",
    });
    assert.ok(seen.some((s) => s.url === "/v1.50/containers/c1/kill?signal=HUP"));
    const rename = await ctnet("rename", "missing", "x");
    assert.deepEqual(rename, {
      code: 1,
      stdout: "",
      stderr:
        "Error response from daemon: No such container: missing\nError: failed to rename container named missing\n",
    });
    const attach = await ctnet("start", "-a", "c1", "c2");
    assert.deepEqual(
      [attach.code, attach.stderr],
      [1, "you cannot start and attach multiple containers at once\n"],
    );
  });

  it("image busybox imports the script's tar with CMD sh", {
    skip: !existsSync("/bin/busybox"),
  }, async () => {
    const res = await ctnet("image", "busybox", "local/busybox:v1");
    assert.deepEqual(res, { code: 0, stdout: `Importing\n${ID}\n`, stderr: "" });
    const req = seen.findLast((s) => s.url?.startsWith("/v1.50/images/create"));
    assert.equal(
      req?.url,
      "/v1.50/images/create?fromSrc=-&repo=local%2Fbusybox&tag=v1&changes=CMD+%5B%22sh%22%5D",
    );
    // A tar archive: "ustar" at offset 257 of its first header.
    assert.equal(req?.body.subarray(257, 262).toString(), "ustar");
  });
});
