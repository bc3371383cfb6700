import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { ServerResponse } from "node:http";
import type { Duplex, Readable, Writable } from "node:stream";
import { z } from "zod";
import { InvalidParameterError, NotSupportedError } from "../../errors.js";
import { type ExecConfig, type ExecProcess, type ExecRecord, Execs } from "../../runtime/exec.js";
import {
  openStream,
  reply,
  type StreamId,
  type StreamKind,
  type UpgradeRoutes,
  upgrade,
  writeFrame,
} from "../hijack.js";
import { type ApiRequest, queryBool, type Router, sendEmpty, sendJson } from "../router.js";

const FOLLOW_POLL_MS = 50;
const READ_CHUNK = 64 * 1024;

/** What the exec and attach routes need to know about containers, supplied by the engine. */
export interface ExecHooks {
  /** The running container's full id and State.Pid; throws NotFoundError, or ConflictError when it is not running. */
  containerPid(ref: string): { id: string; pid: number };
  /**
   * The container's log file and whether the container may still write to it (created or
   * running, so that an attach made before start follows the run); throws NotFoundError.
   */
  containerLog(ref: string): { id: string; path: string; writing(): boolean };
}

const consoleSize = z.tuple([z.number().int().min(0), z.number().int().min(0)]).nullish();

const execCreateSchema = z.looseObject({
  AttachStdin: z.boolean().nullish(),
  AttachStdout: z.boolean().nullish(),
  AttachStderr: z.boolean().nullish(),
  Tty: z.boolean().nullish(),
  Cmd: z.array(z.string()).nullish(),
  Env: z.array(z.string()).nullish(),
  WorkingDir: z.string().nullish(),
  User: z.string().nullish(),
  Privileged: z.boolean().nullish(),
  DetachKeys: z.string().nullish(),
  ConsoleSize: consoleSize,
});

const execStartSchema = z.looseObject({
  Detach: z.boolean().nullish(),
  Tty: z.boolean().nullish(),
  ConsoleSize: consoleSize,
});

function parse<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  const r = schema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new InvalidParameterError(`invalid request body: ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return r.data;
}

/** The process runs as the container's own user; ctnet containers run as root only. */
const ROOT_USERS = new Set(["", "root", "0", "root:root", "0:0"]);

function toExecConfig(containerId: string, body: unknown): ExecConfig {
  const b = parse(execCreateSchema, body);
  if (!b.Cmd || b.Cmd.length === 0) throw new InvalidParameterError("No exec command specified");
  const user = b.User ?? "";
  if (!ROOT_USERS.has(user)) throw new InvalidParameterError(`exec as user "${user}" is not supported yet`);
  if (b.Privileged) throw new InvalidParameterError("privileged exec is not supported");
  return {
    containerId,
    cmd: b.Cmd,
    env: b.Env ?? [],
    workingDir: b.WorkingDir ?? "",
    user,
    tty: b.Tty ?? false,
    attachStdin: b.AttachStdin ?? false,
    attachStdout: b.AttachStdout ?? false,
    attachStderr: b.AttachStderr ?? false,
    detachKeys: b.DetachKeys ?? "",
    consoleSize: b.ConsoleSize ?? undefined,
  };
}

function execInspect(r: ExecRecord) {
  const c = r.config;
  return {
    ID: r.id,
    Running: r.running,
    ExitCode: r.exitCode,
    ProcessConfig: {
      tty: c.tty,
      entrypoint: c.cmd[0],
      arguments: c.cmd.slice(1),
      privileged: false,
      user: c.user,
    },
    OpenStdin: c.attachStdin,
    OpenStderr: c.attachStderr,
    OpenStdout: c.attachStdout,
    CanRemove: false,
    ContainerID: c.containerId,
    DetachKeys: c.detachKeys,
    Pid: r.pid,
  };
}

function sizeParams(q: URLSearchParams): [number, number] {
  const h = Number(q.get("h"));
  const w = Number(q.get("w"));
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 0 || w < 0 || h > 0xffff || w > 0xffff) {
    throw new InvalidParameterError(`invalid terminal size: h=${q.get("h")} w=${q.get("w")}`);
  }
  return [h, w];
}

/** Copies a readable into the stream (framed when multiplexed), pausing while the client is behind. */
function forward(from: Readable, to: Writable, stream: StreamId | undefined): void {
  from.on("data", (chunk: Buffer) => {
    const more = stream ? writeFrame(to, stream, chunk) : to.write(chunk);
    if (!more) {
      from.pause();
      to.once("drain", () => from.resume());
    }
  });
}

/**
 * Connects an exec process to its client: output to `sink`, `source` (the hijacked socket) to the
 * process's input. The stream ends once the process has exited and all its output is sent; a
 * client that goes away takes the process's streams with it.
 */
function connect(proc: ExecProcess, sink: Writable, source: Readable | undefined): void {
  const outputs = [proc.output, proc.stderr].filter((s): s is Readable => s !== undefined);
  if (proc.output) forward(proc.output, sink, proc.tty ? undefined : 1);
  if (proc.stderr) forward(proc.stderr, sink, 2);
  if (source && proc.input) {
    // pipe() ends the input when the client half-closes: the process reads end of file.
    source.pipe(proc.input);
  } else {
    // Read and dropped anyway, so that a client that closes is noticed.
    source?.resume();
  }
  const drained = outputs.map((s) => new Promise((resolve) => s.once("close", resolve)));
  void Promise.all([proc.exit, ...drained]).then(() => sink.end());
  sink.once("close", () => {
    for (const s of outputs) s.destroy();
    proc.input?.destroy();
  });
}

/**
 * Sends the container's log in the multiplexed format, from its start or from its current end,
 * and with `follow` keeps sending until the container can no longer write. The file is opened
 * once, so what was written stays readable when --rm removes it at the container's exit.
 */
function streamLog(
  sink: Writable,
  log: { path: string; writing(): boolean },
  opts: { fromStart: boolean; follow: boolean; stream: StreamId },
): void {
  let fd: number;
  try {
    fd = openSync(log.path, "r");
  } catch {
    sink.end();
    return;
  }
  let offset = opts.fromStart ? 0 : fstatSync(fd).size;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    closeSync(fd);
    sink.end();
  };
  const pump = () => {
    const size = fstatSync(fd).size;
    while (offset < size && !sink.writableNeedDrain) {
      const buf = Buffer.alloc(Math.min(size - offset, READ_CHUNK));
      const n = readSync(fd, buf, 0, buf.length, offset);
      if (n <= 0) break;
      writeFrame(sink, opts.stream, buf.subarray(0, n));
      offset += n;
    }
    return offset >= size;
  };
  sink.once("close", () => {
    if (!done) {
      done = true;
      closeSync(fd);
    }
  });
  const tick = () => {
    if (done) return;
    // Asked before reading, so everything written before the container stopped is still sent.
    const more = opts.follow && log.writing();
    if (pump() && !more) {
      finish();
      return;
    }
    setTimeout(tick, FOLLOW_POLL_MS);
  };
  tick();
}

export function execRoutes(router: Router, upgrades: UpgradeRoutes, hooks: ExecHooks): void {
  const execs = new Execs();

  router.on("POST", "/containers/:id/exec", async (req, res) => {
    const { id } = hooks.containerPid(req.params.id ?? "");
    const record = execs.create(toExecConfig(id, await req.body()));
    sendJson(res, 201, { Id: record.id });
  });

  router.on("GET", "/exec/:id/json", (req, res) => {
    sendJson(res, 200, execInspect(execs.get(req.params.id ?? "")));
  });

  router.on("POST", "/exec/:id/resize", (req, res) => {
    const [rows, cols] = sizeParams(req.query);
    const r = execs.get(req.params.id ?? "");
    if (r.process) r.process.resize(rows, cols);
    else r.config.consoleSize = [rows, cols];
    sendEmpty(res, 200);
  });

  /** Parses the start request and starts the process; `detach` leaves its output unread. */
  const start = async (req: ApiRequest) => {
    const body = parse(execStartSchema, await req.body());
    const r = execs.get(req.params.id ?? "");
    if (body.ConsoleSize && r.config.tty) r.config.consoleSize = body.ConsoleSize;
    const { pid } = hooks.containerPid(r.config.containerId);
    const proc = execs.start(r.id, pid);
    const kind: StreamKind = r.config.tty ? "raw" : "multiplexed";
    if (body.Detach) {
      proc.output?.resume();
      proc.stderr?.resume();
    }
    return { proc, kind, detach: body.Detach ?? false };
  };

  router.on("POST", "/exec/:id/start", async (req, res) => {
    const { proc, kind, detach } = await start(req);
    if (detach) {
      sendEmpty(res, 200);
      return;
    }
    openStream(res, kind);
    connect(proc, res, undefined);
  });

  upgrades.on("POST", "/exec/:id/start", async (req, socket) => {
    const { proc, kind, detach } = await start(req);
    if (detach) {
      reply(socket, 200, "");
      return;
    }
    upgrade(socket, kind);
    connect(proc, socket, socket);
  });

  /** Checks the query; answers with what to stream. */
  const attach = (req: ApiRequest) => {
    const log = hooks.containerLog(req.params.id ?? "");
    const q = req.query;
    const stdout = queryBool(q, "stdout");
    const stderr = queryBool(q, "stderr");
    if (queryBool(q, "stdin")) {
      throw new NotSupportedError("attaching stdin is not supported yet: a container's input is /dev/null");
    }
    if (!stdout && !stderr) throw new InvalidParameterError("you must choose at least one stream");
    const send = (sink: Writable) =>
      streamLog(sink, log, {
        fromStart: queryBool(q, "logs"),
        follow: queryBool(q, "stream"),
        stream: stdout ? 1 : 2,
      });
    return send;
  };

  router.on("POST", "/containers/:id/attach", (req, res: ServerResponse) => {
    const send = attach(req);
    openStream(res, "multiplexed");
    send(res);
  });

  upgrades.on("POST", "/containers/:id/attach", (req, socket: Duplex) => {
    const send = attach(req);
    upgrade(socket, "multiplexed");
    socket.resume();
    send(socket);
  });

  // A container's output is a log file, not a terminal: there is nothing to resize.
  router.on("POST", "/containers/:id/resize", (req, res) => {
    sizeParams(req.query);
    hooks.containerLog(req.params.id ?? "");
    sendEmpty(res, 200);
  });
}
