import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { ServerResponse } from "node:http";
import type { Engine } from "../../engine/engine.js";
import type { EngineEvent } from "../../engine/events.js";
import type { ContainerRecord } from "../../engine/types.js";
import { InvalidParameterError } from "../../errors.js";
import { applyFilters, matchesLabels, matchesPattern, parseFilters } from "../filters.js";
import { queryBool, type Router, sendEmpty, sendJson } from "../router.js";
import { toContainerCreate } from "../schemas.js";
import { containerSummary, containerView } from "../views.js";

const CONTAINER_FILTERS = ["id", "name", "status", "network", "label", "exited"] as const;
const FOLLOW_POLL_MS = 100;

export function containerRoutes(router: Router, engine: Engine): void {
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
    streamLogs(
      res,
      containers.logPath(c),
      queryBool(req.query, "follow") ? () => stillWriting(ctx.containers.get(c.id)) : undefined,
      req.raw,
      tail === "all" ? undefined : Number(tail),
    );
  });
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
 * Sends a log file in Docker's multiplexed stream format (8-byte frame header: stream 1 =
 * stdout). The container's stdout and stderr share one file, so everything is sent as stdout.
 * With `following`, keeps reading while it says the container may still write. The file is opened
 * once, so what a container wrote stays readable even when --rm removes the file at its exit.
 */
function streamLogs(
  res: ServerResponse,
  path: string,
  following: (() => boolean) | undefined,
  raw: NodeJS.EventEmitter,
  tailLines?: number,
): void {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    res.writeHead(200, { "Content-Type": "application/vnd.docker.multiplexed-stream" });
    res.end();
    return;
  }
  res.writeHead(200, { "Content-Type": "application/vnd.docker.multiplexed-stream" });
  res.flushHeaders();
  let offset = tailLines === undefined ? 0 : tailOffset(fd, tailLines);
  let closed = false;
  raw.on("close", () => {
    closed = true;
  });
  const pump = () => {
    const size = fstatSync(fd).size;
    while (offset < size) {
      const buf = Buffer.alloc(Math.min(size - offset, 64 * 1024));
      const n = readSync(fd, buf, 0, buf.length, offset);
      if (n <= 0) break;
      const header = Buffer.alloc(8);
      header[0] = 1;
      header.writeUInt32BE(n, 4);
      res.write(header);
      res.write(buf.subarray(0, n));
      offset += n;
    }
  };
  const finish = () => {
    closeSync(fd);
    res.end();
  };
  pump();
  if (!following) {
    finish();
    return;
  }
  const tick = () => {
    if (closed) {
      closeSync(fd);
      return;
    }
    const more = following();
    pump();
    if (!more) {
      finish();
      return;
    }
    setTimeout(tick, FOLLOW_POLL_MS);
  };
  setTimeout(tick, FOLLOW_POLL_MS);
}
