import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { Readable, Writable } from "node:stream";
import type { Engine } from "../../engine/engine.js";
import type { EngineEvent } from "../../engine/events.js";
import type { ContainerRecord } from "../../engine/types.js";
import { ConflictError, InvalidParameterError } from "../../errors.js";
import { isRelayed } from "../../runtime/console.js";
import { applyFilters, matchesLabels, matchesPattern, parseFilters } from "../filters.js";
import {
  DEFAULT_DETACH_KEYS,
  DetachKeys,
  openStream,
  parseDetachKeys,
  terminalSize,
  type UpgradeRoutes,
  upgrade,
  writeFrame,
} from "../hijack.js";
import { type ApiRequest, queryBool, type Router, sendEmpty, sendJson } from "../router.js";
import { toContainerCreate } from "../schemas.js";
import { containerSummary, containerView } from "../views.js";

const CONTAINER_FILTERS = ["id", "name", "status", "network", "label", "exited"] as const;
const FOLLOW_POLL_MS = 50;
const READ_CHUNK = 64 * 1024;

export function containerRoutes(router: Router, upgrades: UpgradeRoutes, engine: Engine): void {
  const ctx = engine.ctx;
  const containers = engine.containers;
  const tests = {
    id: (c: ContainerRecord, v: string) => c.id.startsWith(v),
    name: (c: ContainerRecord, v: string) => matchesPattern(v.replace(/^\//, ""), c.name),
    status: (c: ContainerRecord, v: string) => c.state.status === v,
    exited: (c: ContainerRecord, v: string) => c.state.status === "exited" && String(c.state.exitCode) === v,
    network: (c: ContainerRecord, v: string) =>
      c.attachments.some((a) => a.networkId.startsWith(v) || ctx.networks.get(a.networkId)?.name === v),
    label: (c: ContainerRecord, v: string) => matchesLabels([v], c.labels),
  };

  const view = (c: ContainerRecord) =>
    containerView(ctx, c, { ...containers.runFiles(c), log: containers.logPath(c) });

  router.on("GET", "/containers/json", (req, res) => {
    const filters = parseFilters(req.query.get("filters"), CONTAINER_FILTERS);
    const all = queryBool(req.query, "all") || filters.has("status") || filters.has("exited");
    let list = applyFilters(containers.list(), filters, tests).filter(
      (c) => all || c.state.status === "running",
    );
    const limit = Number(req.query.get("limit") ?? -1);
    if (limit > 0) list = list.slice(0, limit);
    sendJson(
      res,
      200,
      list.map((c) => containerSummary(ctx, c)),
    );
  });

  router.on("POST", "/containers/create", async (req, res) => {
    const c = await containers.create(toContainerCreate(await req.body(), req.query.get("name")));
    sendJson(res, 201, { Id: c.id, Warnings: [] });
  });

  router.on("GET", "/containers/:id/json", (req, res) => {
    sendJson(res, 200, view(containers.find(req.params.id ?? "")));
  });

  router.on("POST", "/containers/:id/start", async (req, res) => {
    sendEmpty(res, (await containers.start(req.params.id ?? "")) ? 204 : 304);
  });

  router.on("POST", "/containers/:id/stop", async (req, res) => {
    sendEmpty(res, (await containers.stop(req.params.id ?? "", timeoutParam(req.query))) ? 204 : 304);
  });

  router.on("POST", "/containers/:id/restart", async (req, res) => {
    await containers.stop(req.params.id ?? "", timeoutParam(req.query));
    await containers.start(req.params.id ?? "");
    sendEmpty(res, 204);
  });

  router.on("POST", "/containers/:id/rename", async (req, res) => {
    const name = req.query.get("name");
    if (!name) throw new InvalidParameterError("a new name is required (?name=)");
    await containers.rename(req.params.id ?? "", name);
    sendEmpty(res, 204);
  });

  router.on("POST", "/containers/:id/kill", async (req, res) => {
    await containers.kill(req.params.id ?? "", req.query.get("signal") || "SIGKILL");
    sendEmpty(res, 204);
  });

  router.on("DELETE", "/containers/:id", async (req, res) => {
    if (queryBool(req.query, "link")) throw new InvalidParameterError("legacy links are not supported");
    await containers.remove(req.params.id ?? "", queryBool(req.query, "force"));
    sendEmpty(res, 204);
  });

  router.on("POST", "/containers/:id/wait", async (req, res) => {
    const c = containers.find(req.params.id ?? "");
    const condition = req.query.get("condition") || "not-running";
    if (!["not-running", "next-exit", "removed"].includes(condition)) {
      throw new InvalidParameterError(`invalid condition: "${condition}"`);
    }
    // The status line goes out at once (as Docker does) so a client can start the container after.
    res.writeHead(200, { "Content-Type": "application/json" });
    res.flushHeaders();
    if (condition === "not-running" && c.state.status !== "running") {
      res.end(`${JSON.stringify({ StatusCode: c.state.exitCode, Error: null })}\n`);
      return;
    }
    const code = await new Promise<number>((resolve) => {
      let exitCode = c.state.exitCode;
      const finish = () => {
        ctx.events.off("event", on);
        resolve(exitCode);
      };
      const on = (e: EngineEvent) => {
        if (e.Actor.ID !== c.id) return;
        if (e.Action === "die") {
          exitCode = Number(e.Actor.Attributes.exitCode ?? 0);
          if (condition !== "removed") finish();
        } else if (e.Action === "destroy") {
          finish();
        }
      };
      ctx.events.on("event", on);
      req.raw.on("close", () => ctx.events.off("event", on));
    });
    res.end(`${JSON.stringify({ StatusCode: code, Error: null })}\n`);
  });

  router.on("GET", "/containers/:id/logs", (req, res) => {
    const c = containers.find(req.params.id ?? "");
    if (!queryBool(req.query, "stdout") && !queryBool(req.query, "stderr")) {
      throw new InvalidParameterError("you must choose at least one stream");
    }
    const tail = req.query.get("tail") ?? "all";
    if (tail !== "all" && !/^\d+$/.test(tail)) throw new InvalidParameterError(`invalid tail value: ${tail}`);
    // A TTY's output is one stream, sent as is (the docker CLI reads it so for a TTY container).
    const raw = c.stdio?.tty ?? false;
    openStream(res, raw ? "raw" : "multiplexed");
    copyLog(res, containers.logPath(c), {
      offset: (fd) => (tail === "all" ? 0 : tailOffset(fd, Number(tail))),
      raw,
      ...(queryBool(req.query, "follow") ? { following: () => stillWriting(ctx.containers.get(c.id)) } : {}),
    });
  });

  /**
   * Checks an attach request; answers with the function that connects the client. A relayed
   * container (-i, -t, a foreground run) connects the client to its live streams (stdin too);
   * another one's output is its log file, followed while the container runs.
   */
  const attach = (req: ApiRequest) => {
    const c = containers.find(req.params.id ?? "");
    if (c.state.status === "removing") {
      throw new ConflictError(`container ${c.id} is being removed: cannot attach`);
    }
    const q = req.query;
    const stdin = queryBool(q, "stdin");
    const stdout = queryBool(q, "stdout");
    const stderr = queryBool(q, "stderr");
    if (!stdin && !stdout && !stderr) throw new InvalidParameterError("you must choose at least one stream");
    const keysSpec = q.get("detachKeys");
    const keys = keysSpec ? parseDetachKeys(keysSpec) : DEFAULT_DETACH_KEYS;
    const tty = c.stdio?.tty ?? false;
    const logs = queryBool(q, "logs");
    const stream = queryBool(q, "stream");
    const connect = (sink: Writable, input: Readable | undefined) => {
      if (!c.stdio || !isRelayed(c.stdio)) {
        // Docker reads and drops input for a container whose stdin is not open.
        input?.resume();
        copyLog(sink, containers.logPath(c), {
          offset: (fd) => (logs ? 0 : fstatSync(fd).size),
          raw: false,
          ...(stream ? { following: () => stillWriting(ctx.containers.get(c.id)) } : {}),
        });
        return;
      }
      if (logs) {
        // Read at once and before attaching: no output can come in between on this one thread.
        copyLogNow(sink, containers.logPath(c), tty);
      }
      if (!stream) {
        input?.resume();
        sink.end();
        return;
      }
      const attached = containers.streams(c).attach({
        sink: {
          write: (id, data) => (tty ? sink.write(data) : writeFrame(sink, id, data)),
          end: () => sink.end(),
          connection: sink,
        },
        stdin: stdin && input !== undefined,
        stdout,
        stderr,
      });
      if (!input) return;
      if (!stdin) {
        input.resume();
        return;
      }
      // With a TTY the client's keys are raw: the detach sequence is watched for (Docker does so
      // too, for clients that do not watch themselves).
      const detachKeys = tty ? new DetachKeys(keys) : undefined;
      input.on("data", (chunk: Buffer) => {
        if (!detachKeys) {
          attached.input(chunk);
          return;
        }
        const { pass, detach } = detachKeys.scan(chunk);
        if (pass.length > 0) attached.input(pass);
        if (detach) {
          input.removeAllListeners("data");
          input.resume();
          attached.detach();
        }
      });
      input.once("end", () => attached.inputEnd());
    };
    return { connect, kind: tty ? ("raw" as const) : ("multiplexed" as const) };
  };

  router.on("POST", "/containers/:id/attach", (req, res) => {
    const { connect, kind } = attach(req);
    openStream(res, kind);
    connect(res, undefined);
  });

  upgrades.on("POST", "/containers/:id/attach", (req, socket) => {
    const { connect, kind } = attach(req);
    upgrade(socket, kind);
    connect(socket, socket);
  });

  router.on("POST", "/containers/:id/resize", (req, res) => {
    const [rows, cols] = terminalSize(req.query);
    const c = containers.find(req.params.id ?? "");
    if (c.state.status !== "running") throw new ConflictError(`Container ${c.id} is not running`);
    // Without a TTY there is no terminal to size: nothing to do, as with Docker.
    if (c.stdio?.tty) containers.streams(c).resize(rows, cols);
    sendEmpty(res, 200);
  });
}

/** Sends the whole log file now, synchronously: the part of an attach with `logs=1` that came before. */
function copyLogNow(sink: Writable, path: string, raw: boolean): void {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return;
  }
  try {
    const buf = Buffer.alloc(READ_CHUNK);
    for (let offset = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, offset);
      if (n <= 0) break;
      const chunk = Buffer.from(buf.subarray(0, n));
      if (raw) sink.write(chunk);
      else writeFrame(sink, 1, chunk);
      offset += n;
    }
  } finally {
    closeSync(fd);
  }
}

/** Where the last `lines` lines of the file start (Docker's `--tail`), reading back from its end. */
function tailOffset(fd: number, lines: number): number {
  let pos = fstatSync(fd).size;
  const end = pos;
  let seen = 0;
  const buf = Buffer.alloc(64 * 1024);
  while (pos > 0) {
    const n = Math.min(buf.length, pos);
    pos -= n;
    readSync(fd, buf, 0, n, pos);
    for (let i = n - 1; i >= 0; i--) {
      // A final newline ends the last line rather than starting an empty one.
      if (buf[i] === 0x0a && pos + i !== end - 1 && ++seen === lines) return pos + i + 1;
    }
  }
  return lines === 0 ? end : 0;
}

/** A created container will write once started; a running one may write more. */
function stillWriting(c: ContainerRecord | undefined): boolean {
  return c !== undefined && (c.state.status === "created" || c.state.status === "running");
}

function timeoutParam(q: URLSearchParams): number | undefined {
  const t = q.get("t") ?? q.get("timeout");
  if (t === null || t === "") return undefined;
  const n = Number(t);
  if (!Number.isInteger(n)) throw new InvalidParameterError(`invalid timeout: ${t}`);
  return n < 0 ? 10 : n;
}

/**
 * Copies a log file to `sink` from `offset`: in frames of stream 1 (the container's stdout and
 * stderr share the file), or raw for a TTY. With `following`, keeps reading while it says the
 * container may still write. The file is opened once, so what a container wrote stays readable
 * when --rm removes the file at its exit.
 */
function copyLog(
  sink: Writable,
  path: string,
  opts: { offset: (fd: number) => number; raw: boolean; following?: () => boolean },
): void {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    sink.end();
    return;
  }
  let offset = opts.offset(fd);
  let done = false;
  const stop = () => {
    if (done) return false;
    done = true;
    closeSync(fd);
    return true;
  };
  sink.once("close", stop);
  const pump = () => {
    const size = fstatSync(fd).size;
    while (offset < size && !sink.writableNeedDrain) {
      const buf = Buffer.alloc(Math.min(size - offset, READ_CHUNK));
      const n = readSync(fd, buf, 0, buf.length, offset);
      if (n <= 0) break;
      if (opts.raw) sink.write(buf.subarray(0, n));
      else writeFrame(sink, 1, buf.subarray(0, n));
      offset += n;
    }
    return offset >= size;
  };
  const tick = () => {
    if (done) return;
    // Asked before reading, so everything written before the container stopped is still sent.
    const more = opts.following?.() ?? false;
    if (pump() && !more) {
      if (stop()) sink.end();
      return;
    }
    setTimeout(tick, FOLLOW_POLL_MS);
  };
  tick();
}
