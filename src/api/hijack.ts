/**
 * Hijacked connections of the Docker API (exec start, attach). Docker clients send
 * `Connection: Upgrade` and `Upgrade: tcp`; node:http hands such requests to the server's
 * 'upgrade' event with the bare socket instead of its request handler, so they need a registry of
 * their own. After `101 UPGRADED` the socket carries raw bytes both ways.
 */
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from "node:http";
import type { Duplex, Writable } from "node:stream";
import { CtnetError, InvalidParameterError } from "../errors.js";
import { log } from "../log.js";
import { type ApiRequest, type Handler, Router } from "./router.js";
import { API_VERSION, CTNET_VERSION } from "./version.js";

/** Stream 1 is stdout, 2 stderr in the multiplexed format. */
export type StreamId = 1 | 2;

/** raw: a TTY's single stream as is; multiplexed: stdout and stderr in 8-byte-header frames. */
export type StreamKind = "raw" | "multiplexed";

const MEDIA_TYPE: Record<StreamKind, string> = {
  raw: "application/vnd.docker.raw-stream",
  multiplexed: "application/vnd.docker.multiplexed-stream",
};

/** The request's body is already read: what the socket yields next is the client's stream. */
export type UpgradeHandler = (req: ApiRequest, socket: Duplex) => Promise<void> | void;

export class UpgradeRoutes {
  // Router does the path matching (version prefix, params) so both kinds of routes parse alike;
  // its handlers are only keys into `upgrades`.
  private readonly router = new Router();
  private readonly upgrades = new Map<Handler, UpgradeHandler>();

  on(method: string, path: string, fn: UpgradeHandler): this {
    const key: Handler = () => undefined;
    this.upgrades.set(key, fn);
    this.router.on(method, path, key);
    return this;
  }

  /** The server's 'upgrade' listener: `server.on("upgrade", upgrades.listener)`. */
  readonly listener = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    void this.handle(req, socket, head);
  };

  async handle(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    // A client that goes away mid-stream must not become an uncaught error.
    socket.on("error", (err) => log.debug({ err }, "hijacked connection failed"));
    const method = req.method ?? "GET";
    const m = this.router.match(method, req.url ?? "/");
    const fn = m.handler && this.upgrades.get(m.handler);
    if (!fn || !m.request) {
      if (m.allowed.length > 0) {
        reply(socket, 405, `method ${method} not allowed on ${req.url}`, { Allow: m.allowed.join(", ") });
      } else {
        reply(socket, 404, `page not found: ${method} ${req.url}`);
      }
      return;
    }
    try {
      const body = parseBody(await readBody(req, socket, head));
      await fn({ ...m.request, raw: req, body: () => Promise.resolve(body) }, socket);
    } catch (err) {
      const status = err instanceof CtnetError ? err.status : 500;
      if (status >= 500) log.error({ err }, "request failed");
      if (socket.writable && !upgraded.has(socket)) {
        reply(socket, status, err instanceof Error ? err.message : String(err));
      } else {
        socket.destroy();
      }
    }
  }
}

const MAX_BODY = 1024 * 1024;

/**
 * node:http stops parsing an upgrade request at its headers: the body comes in `head` and on the
 * socket, followed by whatever the client streams. Reads exactly Content-Length bytes and puts the
 * rest back for the handler.
 */
async function readBody(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<Buffer> {
  if (req.headers["transfer-encoding"]) {
    throw new InvalidParameterError("a chunked body is not supported on a hijacked connection");
  }
  const length = Number(req.headers["content-length"] ?? 0);
  if (!Number.isInteger(length) || length < 0 || length > MAX_BODY) {
    throw new InvalidParameterError("invalid or too large Content-Length");
  }
  let buf = head;
  if (buf.length < length) {
    buf = await new Promise<Buffer>((resolve, reject) => {
      const chunks = [head];
      let size = head.length;
      const onData = (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
        if (size < length) return;
        stop();
        socket.pause();
        resolve(Buffer.concat(chunks));
      };
      const onEnd = () => {
        stop();
        reject(new InvalidParameterError("the request body ended early"));
      };
      const stop = () => {
        socket.off("data", onData);
        socket.off("end", onEnd);
      };
      socket.on("data", onData);
      socket.once("end", onEnd);
    });
  }
  if (buf.length > length) socket.unshift(buf.subarray(length));
  return buf.subarray(0, length);
}

function parseBody(raw: Buffer): unknown {
  const text = raw.toString("utf8").trim();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new InvalidParameterError("invalid JSON in request body");
  }
}

// Once the 101 is out an error can no longer be an HTTP answer: the connection is cut instead.
const upgraded = new WeakSet<Duplex>();

function responseHead(status: number, headers: Record<string, string | number>): string {
  const all = { Server: `ctnet/${CTNET_VERSION} (linux)`, "Api-Version": API_VERSION, ...headers };
  const lines = Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`);
  const reason = status === 101 ? "UPGRADED" : (STATUS_CODES[status] ?? "Unknown");
  return `HTTP/1.1 ${status} ${reason}\r\n${lines.join("")}\r\n`;
}

/** An ordinary HTTP answer on an upgrade request's socket, which is closed after it ("" sends no body). */
export function reply(
  socket: Duplex,
  status: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  const text = message ? `${JSON.stringify({ message })}\n` : "";
  const type: Record<string, string> = text ? { "Content-Type": "application/json" } : {};
  socket.end(
    responseHead(status, {
      ...type,
      ...headers,
      "Content-Length": Buffer.byteLength(text),
      Connection: "close",
    }) + text,
  );
}

/** Answers 101: from here on the socket is the stream. */
export function upgrade(socket: Duplex, kind: StreamKind): void {
  upgraded.add(socket);
  socket.write(
    responseHead(101, { "Content-Type": MEDIA_TYPE[kind], Connection: "Upgrade", Upgrade: "tcp" }),
  );
}

/** The same stream for a client that did not ask to upgrade: a 200 whose body is the stream. */
export function openStream(res: ServerResponse, kind: StreamKind): void {
  res.writeHead(200, { "Content-Type": MEDIA_TYPE[kind] });
  res.flushHeaders();
}

/**
 * Writes one frame of the multiplexed format (stream id, three zero bytes, big-endian length).
 * Returns false when the destination wants the writer to wait for 'drain'.
 */
export function writeFrame(out: Writable, stream: StreamId, data: Buffer): boolean {
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(data.length, 4);
  out.write(header);
  return out.write(data);
}

/** `?h=&w=` of a resize request: rows and columns of the client's terminal. */
export function terminalSize(q: URLSearchParams): [number, number] {
  const h = Number(q.get("h"));
  const w = Number(q.get("w"));
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 0 || w < 0 || h > 0xffff || w > 0xffff) {
    throw new InvalidParameterError(`invalid terminal size: h=${q.get("h")} w=${q.get("w")}`);
  }
  return [h, w];
}

/** Docker's default detach keys: ctrl-p, ctrl-q. */
export const DEFAULT_DETACH_KEYS = Buffer.from([0x10, 0x11]);

/** The control characters Docker names: ctrl-@ (0), ctrl-a (1) … ctrl-z (26), ctrl-[ … ctrl-_ (31). */
const CONTROL_NAMES = "@abcdefghijklmnopqrstuvwxyz[\\]^_";

/**
 * Parses a detach key sequence as Docker does (`ctrl-p,ctrl-q`, `ctrl-a,x`): comma-separated, each
 * a single character or `ctrl-` and one of a–z, @, [, \, ], ^, _.
 */
export function parseDetachKeys(spec: string): Buffer {
  const codes: number[] = [];
  for (const key of spec.split(",")) {
    const ctrl = /^ctrl-(.)$/i.exec(key);
    const code = ctrl
      ? CONTROL_NAMES.indexOf((ctrl[1] ?? "").toLowerCase())
      : key.length === 1
        ? key.charCodeAt(0)
        : -1;
    if (code < 0 || code > 0x7f) throw new InvalidParameterError(`Invalid detach keys (${spec}) provided`);
    codes.push(code);
  }
  return Buffer.from(codes);
}

/**
 * Watches a client's input for its detach keys. Bytes that could start the sequence are held back
 * until the next ones show whether it is; the sequence itself never reaches the container.
 */
export class DetachKeys {
  private matched = 0;

  constructor(private readonly keys: Buffer) {}

  /** What to pass on, and whether the sequence was completed (the rest of the chunk is dropped). */
  scan(chunk: Buffer): { pass: Buffer; detach: boolean } {
    const out: number[] = [];
    for (const byte of chunk) {
      if (this.matched > 0 && byte !== this.keys[this.matched]) {
        // Not the sequence after all: what was held back goes on, and the byte may start it again.
        for (let i = 0; i < this.matched; i++) out.push(this.keys[i] as number);
        this.matched = 0;
      }
      if (byte !== this.keys[this.matched]) {
        out.push(byte);
      } else if (++this.matched === this.keys.length) {
        this.matched = 0;
        return { pass: Buffer.from(out), detach: true };
      }
    }
    return { pass: Buffer.from(out), detach: false };
  }
}
