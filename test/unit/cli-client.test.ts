import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import {
  ApiError,
  Client,
  DaemonConnectionError,
  encodeFilters,
  parseHost,
  resolveHost,
  StreamDemuxer,
} from "../../src/client/client.js";

function frame(stream: number, text: string): Buffer {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

function collect(stream: PassThrough): () => string {
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  return () => Buffer.concat(chunks).toString();
}

describe("client helpers", () => {
  it("resolves the host from flag, then CTNET_HOST, then the default", () => {
    assert.equal(resolveHost("tcp://1.2.3.4:5", { CTNET_HOST: "unix:///x" }), "tcp://1.2.3.4:5");
    assert.equal(resolveHost(undefined, { CTNET_HOST: "unix:///x" }), "unix:///x");
    assert.equal(resolveHost(undefined, {}), "unix:///run/ctnet/ctnet.sock");
  });

  it("parses unix and tcp hosts", () => {
    assert.deepEqual(parseHost("unix:///run/ctnet/ctnet.sock"), { socketPath: "/run/ctnet/ctnet.sock" });
    assert.deepEqual(parseHost("tcp://127.0.0.1:2376"), { host: "127.0.0.1", port: 2376 });
    assert.deepEqual(parseHost("tcp://[::1]:80"), { host: "::1", port: 80 });
    assert.deepEqual(parseHost("tcp://example"), { host: "example", port: 2375 });
    assert.throws(() => parseHost("ftp://x"), /invalid host/);
  });

  it("encodes filters as JSON and leaves out empty ones", () => {
    assert.equal(encodeFilters({ driver: ["bridge"] }), '{"driver":["bridge"]}');
    assert.equal(encodeFilters({}), undefined);
  });

  it("demultiplexes frames split across and sharing chunks", () => {
    const frames: [number, string][] = [];
    const d = new StreamDemuxer((s, p) => frames.push([s, p.toString()]));
    const all = Buffer.concat([frame(1, "out1\n"), frame(2, "err\n"), frame(1, "")]);
    d.push(all.subarray(0, 3));
    d.push(all.subarray(3, 15));
    d.push(all.subarray(15));
    assert.deepEqual(frames, [
      [1, "out1\n"],
      [2, "err\n"],
      [1, ""],
    ]);
    assert.equal(d.pending, 0);
  });
});

describe("client against a stub daemon", () => {
  let dir: string;
  let server: http.Server;
  const seen: { method?: string; url?: string; body: string }[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ctnet-client-"));
    server = http.createServer(async (req, res) => {
      let body = "";
      for await (const c of req) body += c;
      seen.push({ method: req.method, url: req.url, body });
      if (req.url?.startsWith("/v1.50/networks/missing")) {
        res.writeHead(404, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ message: "network missing not found" }));
      } else if (req.url?.startsWith("/v1.50/containers/c1/logs")) {
        res.writeHead(200, { "Content-Type": "application/vnd.docker.multiplexed-stream" });
        res.write(frame(1, "hello\n").subarray(0, 4));
        res.end(Buffer.concat([frame(1, "hello\n").subarray(4), frame(2, "oops\n")]));
      } else if (req.url === "/v1.50/networks/create") {
        res.writeHead(201, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ Id: "n1", Warning: "" }));
      } else {
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end("[]");
      }
    });
    await new Promise<void>((resolve) => server.listen(join(dir, "d.sock"), resolve));
  });

  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends versioned paths, query and JSON bodies", async () => {
    const client = new Client({ host: `unix://${join(dir, "d.sock")}` });
    assert.deepEqual(await client.networkCreate({ Name: "n" }), { Id: "n1", Warning: "" });
    await client.containerList({ all: true, filters: { status: ["exited"] } });
    await client.containerRemove("c 1", { force: true, volumes: false });
    assert.deepEqual(seen.slice(-3), [
      { method: "POST", url: "/v1.50/networks/create", body: '{"Name":"n"}' },
      {
        method: "GET",
        url: "/v1.50/containers/json?all=1&filters=%7B%22status%22%3A%5B%22exited%22%5D%7D",
        body: "",
      },
      { method: "DELETE", url: "/v1.50/containers/c%201?force=1", body: "" },
    ]);
  });

  it("throws ApiError with the daemon's status and message", async () => {
    const client = new Client({ host: `unix://${join(dir, "d.sock")}` });
    await assert.rejects(client.networkInspect("missing"), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 404);
      assert.equal(err.message, "network missing not found");
      return true;
    });
  });

  it("splits a multiplexed log stream into stdout and stderr", async () => {
    const client = new Client({ host: `unix://${join(dir, "d.sock")}` });
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const out = collect(stdout);
    const err = collect(stderr);
    await client.containerLogs("c1", {}, { stdout, stderr });
    assert.equal(out(), "hello\n");
    assert.equal(err(), "oops\n");
  });

  it("says how to start the daemon when nothing listens", async () => {
    const host = `unix://${join(dir, "nobody.sock")}`;
    await assert.rejects(new Client({ host }).ping(), (err: unknown) => {
      assert.ok(err instanceof DaemonConnectionError);
      assert.equal(
        err.message,
        `cannot connect to the ctnet daemon at ${host}: is it running? (ctnet daemon)`,
      );
      return true;
    });
  });
});
