/** The image store on a real disk with real tar, and its Docker API routes, with the docker CLI when present. */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawnSync } from "node:child_process";
import {
  copyFileSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { Router } from "../../src/api/router.js";
import { imageRoutes } from "../../src/api/routes/images.js";
import { handler } from "../../src/api/server.js";
import { ConflictError, InvalidParameterError, NotFoundError } from "../../src/errors.js";
import { type ImageRecord, ImageStore } from "../../src/images/store.js";

const SCRIPT = join(import.meta.dirname, "../../scripts/busybox-image.sh");
const hasDocker = spawnSync("docker", ["--version"]).status === 0;

let work: string;
let busyboxTar: string;

before(() => {
  work = mkdtempSync(join(tmpdir(), "ctnet-images-"));
  busyboxTar = join(work, "busybox.tar");
  execFileSync(SCRIPT, [busyboxTar]);
});

after(() => {
  rmSync(work, { recursive: true, force: true });
});

const notUsed = () => undefined;
const importFile = (s: ImageStore, file: string, opts: Parameters<ImageStore["importTar"]>[1] = {}) =>
  s.importTar(createReadStream(file), opts);
/** Everything the store keeps on disk, apart from its (empty) directories. */
const contents = (root: string) => ({
  records: readdirSync(join(root, "records")),
  rootfs: readdirSync(join(root, "rootfs")),
  tmp: readdirSync(join(root, "tmp")),
});

describe("busybox-image.sh", () => {
  it("makes a root filesystem with busybox, its applets and the files the runtime mounts over", () => {
    const list = execFileSync("tar", ["-tvf", busyboxTar], { encoding: "utf8" });
    assert.match(list, /^-rwxr-xr-x 0\/0 +\d+ .* \.\/bin\/busybox$/m);
    assert.match(list, /\.\/bin\/sh -> \/bin\/busybox$/m);
    assert.match(list, /\.\/usr\/bin\/wget -> \/bin\/busybox$/m);
    assert.match(list, /^drwxrwxrwt .* \.\/tmp\/$/m);
    for (const f of ["etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf", "etc/hostname"])
      assert.match(list, new RegExp(`\\./${f}$`, "m"));
    for (const d of ["proc", "sys", "dev"]) assert.match(list, new RegExp(`^d.* \\./${d}/$`, "m"));
    // The same busybox makes the same archive.
    const again = execFileSync(SCRIPT, { maxBuffer: 64 << 20 });
    assert.ok(again.equals(readFileSync(busyboxTar)));
  });
});

describe("image store", () => {
  let root: string;
  let store: ImageStore;
  let bb: ImageRecord;

  before(async () => {
    root = join(work, "store");
    store = ImageStore.open(root);
    bb = await importFile(store, busyboxTar, {
      repo: "local/busybox",
      changes: ['CMD ["sh"]'],
      message: "demo",
    });
  });

  it("imports a tar as a read-only tree with a record", () => {
    assert.match(bb.id, /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(bb.repoTags, ["local/busybox:latest"]);
    assert.deepEqual(bb.config, { Cmd: ["sh"], Entrypoint: null, Env: null, WorkingDir: "" });
    assert.equal(bb.comment, "demo");
    assert.equal(bb.os, "linux");
    const digest = execFileSync("sha256sum", [busyboxTar], { encoding: "utf8" }).split(" ")[0];
    assert.deepEqual(bb.layers, [`sha256:${digest}`]);
    const rootfs = store.rootfsPath(bb);
    assert.equal(rootfs, join(root, "rootfs", bb.id.slice("sha256:".length)));
    const out = execFileSync(join(rootfs, "bin/busybox"), ["echo", "hello"], { encoding: "utf8" });
    assert.equal(out, "hello\n");
    assert.ok(bb.size > 1_000_000 && bb.size < 10_000_000, String(bb.size));
    assert.deepEqual(contents(root).tmp, []);
  });

  it("finds images by name, tag, full id and id prefix", () => {
    const hex = bb.id.slice("sha256:".length);
    for (const ref of [
      "local/busybox",
      "local/busybox:latest",
      bb.id,
      hex,
      hex.slice(0, 12),
      `sha256:${hex.slice(0, 6)}`,
    ])
      assert.equal(store.find(ref)?.id, bb.id, ref);
    for (const ref of ["busybox", "local/busybox:v9", "ffffffffffff", "Bad Name", ""])
      assert.equal(store.find(ref), undefined, ref);
    assert.throws(
      () => store.get("local/nope"),
      (e: Error) => e instanceof NotFoundError && e.message === "No such image: local/nope:latest",
    );
  });

  it("imports the same archive again as a new image that takes the tag", async () => {
    const gz = join(work, "busybox.tar.gz");
    writeFileSync(gz, gzipSync(readFileSync(busyboxTar)));
    const second = await importFile(store, gz, { repo: "local/busybox" });
    assert.notEqual(second.id, bb.id);
    assert.deepEqual(store.find(bb.id)?.repoTags, []);
    assert.equal(store.find("local/busybox")?.id, second.id);
    assert.ok(existsSync(join(store.rootfsPath(second), "bin/busybox")));
    assert.deepEqual(store.remove(second.id, false, notUsed), [
      { Untagged: "local/busybox:latest" },
      { Deleted: second.id },
      ...second.layers.map((l) => ({ Deleted: l })),
    ]);
    store.tag(bb.id, "local/busybox");
  });

  it("tags, untags and deletes the way docker rmi does", () => {
    store.tag("local/busybox", "local/busybox", "v2");
    store.tag(bb.id.slice(7, 19), "other/repo:x");
    assert.throws(() => store.tag("local/busybox", "Bad"), InvalidParameterError);
    assert.throws(() => store.tag("nope", "x"), NotFoundError);
    assert.deepEqual(store.find("other/repo:x")?.repoTags, [
      "local/busybox:latest",
      "local/busybox:v2",
      "other/repo:x",
    ]);

    // By id, tags in several repositories need force.
    assert.throws(
      () => store.remove(bb.id, false, notUsed),
      (e: Error) => e instanceof ConflictError && /referenced in multiple repositories/.test(e.message),
    );
    // By name with other tags left: only untags.
    assert.deepEqual(store.remove("other/repo:x", false, notUsed), [{ Untagged: "other/repo:x" }]);
    assert.deepEqual(store.remove("local/busybox:v2", false, notUsed), [{ Untagged: "local/busybox:v2" }]);
    assert.throws(() => store.remove("local/busybox:v2", false, notUsed), /No such image: local\/busybox:v2/);

    // The last tag of an image a container uses is kept without force; with force, the tag goes and the tree stays.
    const inUse = (id: string) => (id === bb.id ? "c0ffee0123456789abcdef" : undefined);
    assert.throws(
      () => store.remove("local/busybox", false, inUse),
      (e: Error) =>
        e instanceof ConflictError &&
        e.message ===
          `conflict: unable to remove repository reference "local/busybox" (must force) - container c0ffee012345 is using its referenced image ${bb.id.slice(7, 19)}`,
    );
    assert.throws(
      () => store.remove(bb.id, false, inUse),
      /must be forced\) - image is being used by container c0ffee012345/,
    );
    assert.deepEqual(store.remove("local/busybox", true, inUse), [{ Untagged: "local/busybox:latest" }]);
    assert.deepEqual(store.find(bb.id)?.repoTags, []);
    assert.ok(existsSync(store.rootfsPath(bb)));
    assert.deepEqual(store.remove(bb.id, true, inUse), []);

    // Unused and untagged, by id prefix: deleted with its tree.
    assert.deepEqual(store.remove(bb.id.slice(7, 17), false, notUsed), [
      { Deleted: bb.id },
      { Deleted: bb.layers[0] },
    ]);
    assert.equal(store.find(bb.id), undefined);
    assert.deepEqual(contents(root), { records: [], rootfs: [], tmp: [] });
    assert.deepEqual(ImageStore.open(root).list(), []);
  });

  it("keeps records across reopen", async () => {
    const a = await importFile(store, busyboxTar, {
      repo: "keep",
      tag: "1",
      changes: ["ENV A=1", "WORKDIR /tmp"],
    });
    assert.deepEqual(ImageStore.open(root).find("keep:1"), a);
    store.remove("keep:1", false, notUsed);
    assert.deepEqual(ImageStore.open(root).list(), []);
  });

  it("lists the newest image first", async () => {
    const a = await importFile(store, busyboxTar, { repo: "order/a" });
    const b = await importFile(store, busyboxTar, { repo: "order/b" });
    assert.deepEqual(
      store
        .list()
        .map((i) => i.id)
        .filter((id) => id === a.id || id === b.id),
      [b.id, a.id],
    );
    store.remove("order/a", false, notUsed);
    store.remove("order/b", false, notUsed);
  });
});

describe("failed and interrupted imports", () => {
  let root: string;
  let store: ImageStore;
  before(() => {
    root = join(work, "failures");
    store = ImageStore.open(root);
  });

  const empty = () => assert.deepEqual(contents(root), { records: [], rootfs: [], tmp: [] });

  it("refuses bad parameters before reading", async () => {
    const stream = createReadStream(busyboxTar);
    await assert.rejects(store.importTar(stream, { changes: ["EXPOSE 80"] }), /EXPOSE is not supported/);
    await assert.rejects(store.importTar(stream, { repo: "Bad/Name" }), /must be lowercase/);
    await assert.rejects(store.importTar(stream, { tag: "v1" }), /a tag needs a repository/);
    stream.destroy();
    empty();
  });

  it("refuses what is not a tar archive", async () => {
    await assert.rejects(
      store.importTar(Readable.from([Buffer.alloc(100_000, 7)])),
      /invalid image archive: This does not look like a tar archive/,
    );
    await assert.rejects(store.importTar(Readable.from([])), /invalid image archive/);
    empty();
  });

  it("refuses archives that climb out of the tree", async () => {
    const dir = join(work, "evil");
    mkdirSync(join(dir, "src"), { recursive: true });
    writeFileSync(join(dir, "src", "f"), "x");
    // GNU tar keeps ".." when asked to with -P; extraction must refuse it.
    execFileSync("tar", ["-C", join(dir, "src"), "-P", "-cf", join(dir, "evil.tar"), "f", "../src/f"]);
    await assert.rejects(
      importFile(store, join(dir, "evil.tar"), { repo: "evil" }),
      /Member name contains '\.\.'/,
    );
    empty();
  });

  it("leaves nothing when the upload stops half way", async () => {
    const data = readFileSync(busyboxTar);
    const stream = new Readable({ read() {} });
    const result = store.importTar(stream, { repo: "half" });
    stream.push(data.subarray(0, data.length / 2));
    await new Promise((r) => setTimeout(r, 50));
    stream.destroy(new Error("connection reset"));
    await assert.rejects(result, /image upload interrupted: connection reset/);
    empty();
    assert.equal(store.find("half"), undefined);
  });

  it("removes at open what a crash left behind, and gives a moved tag to the newer write", async () => {
    const a = await importFile(store, busyboxTar, { repo: "crash" });
    const b = await importFile(store, busyboxTar);
    const recordOf = (img: ImageRecord) => join(root, "records", `${img.id.slice(7)}.json`);
    const oldA = readFileSync(recordOf(a));
    store.tag(b.id, "crash");
    // As if the daemon died after writing b (with the tag) but before writing a (without it).
    writeFileSync(recordOf(a), oldA);
    // ... and in the middle of an import, a delete and a record write.
    mkdirSync(join(root, "tmp", "import-x", "rootfs", "bin"), { recursive: true });
    mkdirSync(join(root, "rootfs", "f".repeat(64), "etc"), { recursive: true });
    copyFileSync(recordOf(a), `${recordOf(a)}.tmp`);

    const reopened = ImageStore.open(root);
    assert.deepEqual(reopened.find("crash")?.id, b.id);
    assert.deepEqual(reopened.find(a.id)?.repoTags, []);
    assert.deepEqual(ImageStore.open(root).find(a.id)?.repoTags, []);
    assert.deepEqual(contents(root).tmp, []);
    assert.deepEqual(contents(root).rootfs.sort(), [a.id.slice(7), b.id.slice(7)].sort());
    assert.deepEqual(
      contents(root).records.sort(),
      [`${a.id.slice(7)}.json`, `${b.id.slice(7)}.json`].sort(),
    );
    reopened.remove(a.id, false, notUsed);
    reopened.remove(b.id, false, notUsed);
    empty();
  });
});

describe("image API", () => {
  let root: string;
  let socket: string;
  let server: Server;
  let store: ImageStore;
  const users = new Map<string, string>();

  before(async () => {
    root = join(work, "api");
    socket = join(work, "api.sock");
    store = ImageStore.open(join(root, "images"));
    const router = new Router();
    // The docker CLI pings before anything else; the real daemon's system routes need an engine.
    router
      .on("HEAD", "/_ping", (_req, res) => void res.end("OK"))
      .on("GET", "/_ping", (_req, res) => void res.end("OK"));
    imageRoutes(router, store, { inUse: (id) => users.get(id) });
    server = createServer(handler(router));
    await new Promise<void>((resolve) => server.listen(socket, resolve));
  });

  after(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  const call = (method: string, path: string, body?: Buffer) =>
    new Promise<{ status: number; text: string; json: () => unknown }>((resolve, reject) => {
      const req = request({ socketPath: socket, method, path }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          resolve({ status: res.statusCode ?? 0, text, json: () => JSON.parse(text) });
        });
      });
      req.on("error", reject);
      req.end(body);
    });

  it("imports from the request body and answers the progress stream", async () => {
    const q = new URLSearchParams({ fromSrc: "-", repo: "local/busybox", message: "api" });
    q.append("changes", 'CMD ["sh"]');
    q.append("changes", "ENV PATH=/bin:/usr/bin");
    const r = await call("POST", `/v1.50/images/create?${q}`, readFileSync(busyboxTar));
    assert.equal(r.status, 200, r.text);
    const last = JSON.parse(r.text.trim().split("\n").at(-1) as string) as { status: string };
    assert.match(last.status, /^sha256:[0-9a-f]{64}$/);
    assert.equal(store.find("local/busybox")?.id, last.status);
  });

  it("lists and inspects, with slashes in names escaped or not", async () => {
    const list = (await call("GET", "/images/json")).json() as Record<string, unknown>[];
    assert.equal(list.length, 1);
    const img = store.get("local/busybox");
    assert.deepEqual(list[0], {
      Id: img.id,
      ParentId: "",
      RepoTags: ["local/busybox:latest"],
      RepoDigests: [],
      Created: Math.floor(Date.parse(img.created) / 1000),
      Size: img.size,
      SharedSize: -1,
      Labels: {},
      Containers: -1,
    });
    for (const name of ["local/busybox", "local%2Fbusybox", "local/busybox:latest", img.id.slice(7, 19)]) {
      const r = await call("GET", `/v1.50/images/${name}/json`);
      assert.equal(r.status, 200, `${name}: ${r.text}`);
      const body = r.json() as Record<string, unknown>;
      assert.equal(body.Id, img.id);
      assert.equal(body.Comment, "api");
      assert.deepEqual(body.RootFS, { Type: "layers", Layers: img.layers });
      assert.deepEqual((body.Config as Record<string, unknown>).Cmd, ["sh"]);
      assert.deepEqual((body.Config as Record<string, unknown>).Env, ["PATH=/bin:/usr/bin"]);
      assert.equal(body.Created, img.created);
    }
    const missing = await call("GET", "/images/local/nope/json");
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.json(), { message: "No such image: local/nope:latest" });

    const filtered = (f: object) =>
      call("GET", `/images/json?filters=${encodeURIComponent(JSON.stringify(f))}`);
    assert.equal(((await filtered({ reference: { "local/*": true } })).json() as unknown[]).length, 1);
    assert.equal(((await filtered({ reference: { busybox: true } })).json() as unknown[]).length, 0);
    assert.equal(((await filtered({ dangling: { true: true } })).json() as unknown[]).length, 0);
  });

  it("tags and deletes with Docker's answers", async () => {
    const id = store.get("local/busybox").id;
    assert.equal((await call("POST", "/images/local/busybox/tag?repo=local/busybox&tag=v2")).status, 201);
    assert.equal((await call("POST", "/images/local/busybox/tag?tag=v2")).status, 400);
    assert.deepEqual((await call("DELETE", "/images/local/busybox:v2")).json(), [
      { Untagged: "local/busybox:v2" },
    ]);

    users.set(id, "abcdef0123456789");
    const refused = await call("DELETE", "/images/local/busybox");
    assert.equal(refused.status, 409);
    assert.match(
      (refused.json() as { message: string }).message,
      /container abcdef012345 is using its referenced image/,
    );
    users.clear();

    const removed = await call("DELETE", "/images/local%2Fbusybox?force=0");
    assert.equal(removed.status, 200);
    assert.deepEqual((removed.json() as object[]).slice(0, 2), [
      { Untagged: "local/busybox:latest" },
      { Deleted: id },
    ]);
    assert.deepEqual(await call("GET", "/images/json").then((r) => r.json()), []);
  });

  it("answers a pull with a clear error, and a broken upload with 400", async () => {
    const pull = await call("POST", "/images/create?fromImage=busybox&tag=latest");
    assert.equal(pull.status, 404);
    assert.match(
      (pull.json() as { message: string }).message,
      /ctnet has no registry access: import an image with `docker import`/,
    );
    const url = await call("POST", "/images/create?fromSrc=http://example.invalid/x.tar");
    assert.equal(url.status, 400);
    const garbage = await call("POST", "/images/create?fromSrc=-&repo=bad", Buffer.alloc(2 << 20, 1));
    assert.equal(garbage.status, 400);
    assert.match((garbage.json() as { message: string }).message, /invalid image archive/);
    const changes = await call(
      "POST",
      "/images/create?fromSrc=-&repo=bad&changes=EXPOSE%2080",
      readFileSync(busyboxTar),
    );
    assert.equal(changes.status, 400);
    assert.deepEqual(contents(join(root, "images")), { records: [], rootfs: [], tmp: [] });
  });

  describe("with the docker CLI", { skip: hasDocker ? false : "the docker CLI is not installed" }, () => {
    // Asynchronous: the server answering the CLI runs in this process.
    const docker = (...args: string[]) =>
      new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
        execFile(
          "docker",
          args,
          { env: { ...process.env, DOCKER_HOST: `unix://${socket}` }, timeout: 30_000 },
          (err, stdout, stderr) => resolve({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
        );
      });

    it("imports, lists, inspects, tags and removes", async () => {
      const imp = await docker(
        "import",
        "--change",
        'CMD ["sh"]',
        "--message",
        "cli",
        busyboxTar,
        "local/busybox",
      );
      assert.equal(imp.status, 0, imp.stderr);
      const id = imp.stdout.trim();
      assert.match(id, /^sha256:[0-9a-f]{64}$/);

      const images = await docker("images");
      assert.equal(images.status, 0, images.stderr);
      assert.match(
        images.stdout,
        new RegExp(`^local/busybox\\s+latest\\s+${id.slice(7, 19)}\\s+.*\\s+[\\d.]+[kM]B`, "m"),
      );

      const inspect = await docker("image", "inspect", "local/busybox");
      assert.equal(inspect.status, 0, inspect.stderr);
      const [info] = JSON.parse(inspect.stdout) as {
        Id: string;
        Comment: string;
        Config: { Cmd: string[] };
      }[];
      assert.equal(info?.Id, id);
      assert.equal(info?.Comment, "cli");
      assert.deepEqual(info?.Config.Cmd, ["sh"]);
      const format = await docker(
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}} {{json .RepoTags}}",
        id.slice(7, 19),
      );
      assert.match(format.stdout, /^linux\/\w+ \["local\/busybox:latest"\]$/m);

      assert.equal((await docker("tag", "local/busybox", "local/busybox:v2")).status, 0);
      assert.match((await docker("images", "local/busybox")).stdout, /local\/busybox\s+v2/);
      assert.match((await docker("rmi", "local/busybox:v2")).stdout, /^Untagged: local\/busybox:v2$/m);

      const pull = await docker("pull", "busybox");
      assert.notEqual(pull.status, 0);
      assert.match(pull.stderr, /ctnet has no registry access/);

      const rmi = await docker("rmi", "local/busybox");
      assert.equal(rmi.status, 0, rmi.stderr);
      assert.match(rmi.stdout, /^Untagged: local\/busybox:latest$/m);
      assert.match(rmi.stdout, new RegExp(`^Deleted: ${id}$`, "m"));
      const gone = await docker("image", "inspect", "local/busybox");
      assert.notEqual(gone.status, 0);
      assert.match(gone.stderr, /No such image: local\/busybox/);
      assert.deepEqual(contents(join(root, "images")), { records: [], rootfs: [], tmp: [] });
    });
  });
});
