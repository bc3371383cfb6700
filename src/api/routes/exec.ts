import type { Readable, Writable } from "node:stream";
import { z } from "zod";
import { InvalidParameterError } from "../../errors.js";
import { type ExecConfig, type ExecProcess, type ExecRecord, Execs } from "../../runtime/exec.js";
import {
  openStream,
  reply,
  type StreamId,
  type StreamKind,
  terminalSize,
  type UpgradeRoutes,
  upgrade,
  writeFrame,
} from "../hijack.js";
import { type ApiRequest, type Router, sendEmpty, sendJson } from "../router.js";

/** What the exec routes need to know about containers, supplied by the engine. */
export interface ExecHooks {
  /** The running container's full id and State.Pid; throws NotFoundError, or ConflictError when it is not running. */
  containerPid(ref: string): { id: string; pid: number };
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
    const [rows, cols] = terminalSize(req.query);
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
}
