/**
 * Typed client of the Docker Engine API as ctnet's daemon serves it, over a unix socket or TCP.
 * It knows paths, query encoding, error bodies and the log stream format; it knows nothing about
 * flags or printing, so any tool (the CLI, tests, scripts) can drive the daemon with it.
 */
import http, { type IncomingMessage } from "node:http";
import type {
  ClusterInfo,
  ContainerCreateRequest,
  ContainerCreateResponse,
  ContainerInspect,
  ContainerSummary,
  ContainerWaitResponse,
  Filters,
  ImageDeleteResponseItem,
  ImageInspect,
  ImageSummary,
  Network,
  NetworkConnectRequest,
  NetworkCreateRequest,
  NetworkCreateResponse,
  NetworkDisconnectRequest,
  NetworkPruneResponse,
  ProgressMessage,
  Service,
  ServiceCreateResponse,
  ServiceSpec,
  SystemInfo,
  SystemVersion,
  Task,
} from "./types.js";

export type * from "./types.js";

export const API_VERSION = "1.50";
export const DEFAULT_HOST = "unix:///run/ctnet/ctnet.sock";

/** The daemon answered with an error status; `message` is the daemon's own `{"message"}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/**
 * An `error`/`errorDetail` line of a JSON progress stream: the daemon had already answered 200
 * when the work failed. Its message is printed as is, as docker prints a JSONError.
 */
export class ProgressError extends Error {
  constructor(
    message: string,
    readonly code: number | undefined,
  ) {
    super(message);
    this.name = "ProgressError";
  }
}

/** The daemon could not be reached at all (no socket, refused, no permission). */
export class DaemonConnectionError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = "DaemonConnectionError";
  }
}

export type Endpoint = { socketPath: string } | { host: string; port: number };

/** `-H` wins over `CTNET_HOST`, which wins over the default socket. */
export function resolveHost(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.CTNET_HOST || DEFAULT_HOST;
}

export function parseHost(host: string): Endpoint {
  if (host.startsWith("unix://")) {
    const socketPath = host.slice("unix://".length);
    if (!socketPath) throw new Error(`invalid host ${JSON.stringify(host)}: missing socket path`);
    return { socketPath };
  }
  const m = /^(?:tcp|http):\/\/(\[[0-9a-fA-F:.]+\]|[^:/]+)(?::(\d+))?\/?$/.exec(host);
  if (!m) throw new Error(`invalid host ${JSON.stringify(host)}: expected unix:///PATH or tcp://HOST:PORT`);
  // 2375 is Docker's conventional plain-TCP port, so `tcp://host` means the same as for docker.
  return { host: m[1].replace(/^\[|\]$/g, ""), port: m[2] ? Number(m[2]) : 2375 };
}

/** Empty filters are left out entirely rather than sent as `{}`, as the docker CLI does. */
export function encodeFilters(filters?: Filters): string | undefined {
  if (!filters || Object.keys(filters).length === 0) return undefined;
  return JSON.stringify(filters);
}

export type StreamType = 0 | 1 | 2 | 3;

/**
 * Splits Docker's multiplexed stream (used when a container has no TTY) into frames: an 8-byte
 * header — stream type (0 stdin, 1 stdout, 2 stderr, 3 daemon error), three zero bytes, a
 * big-endian uint32 length — then the payload. Frames may span or share chunks.
 */
export class StreamDemuxer {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly onFrame: (stream: StreamType, payload: Buffer) => void) {}

  push(chunk: Buffer): void {
    let buf = this.buffered.length > 0 ? Buffer.concat([this.buffered, chunk]) : chunk;
    while (buf.length >= 8) {
      const size = buf.readUInt32BE(4);
      if (buf.length < 8 + size) break;
      this.onFrame((buf[0] & 3) as StreamType, buf.subarray(8, 8 + size));
      buf = buf.subarray(8 + size);
    }
    this.buffered = Buffer.from(buf);
  }

  /** Bytes of an unfinished frame; non-zero at end of stream means it was cut short. */
  get pending(): number {
    return this.buffered.length;
  }
}

export interface LogsOptions {
  follow?: boolean;
  tail?: string;
  timestamps?: boolean;
  /** The container's `Config.Tty`, used when the daemon does not name the stream format. */
  tty?: boolean;
  /** Aborting ends a followed stream early; the promise then resolves. */
  signal?: AbortSignal;
  /** called once the daemon has answered, i.e. the stream is in place */
  onOpen?: () => void;
}

export interface LogsOutput {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** An array value repeats its key (`changes=A&changes=B`), as Go's url.Values does. */
type Query = Record<string, string | number | boolean | string[] | undefined>;

interface RequestOptions {
  query?: Query;
  body?: unknown;
  /** A raw body streamed as it is read (chunked), never buffered whole. */
  upload?: { stream: NodeJS.ReadableStream; contentType: string };
  signal?: AbortSignal;
}

export interface ImageImportOptions {
  /** Repository (familiar name) and tag of the new image; none leaves it untagged. */
  repo?: string;
  tag?: string;
  message?: string;
  /** Dockerfile instructions applied to the image's config (`CMD ["sh"]`, `ENV A=1`, …). */
  changes?: string[];
  platform?: string;
  /** Called with every progress line but errors, as it arrives. */
  onProgress?: (message: ProgressMessage) => void;
}

/**
 * `/images/NAME`: names keep their slashes (local/busybox) and colons in the path, as the docker
 * CLI sends them, since the daemon's image routes take the rest of the path as the name.
 */
export function imagePath(name: string): string {
  const segments = name
    .split("/")
    .map((s) => encodeURIComponent(s).replace(/%3A/gi, ":").replace(/%40/g, "@"));
  return `/images/${segments.join("/")}`;
}

export interface ClientOptions {
  /** `unix:///path` or `tcp://host:port`; defaults through {@link resolveHost}. */
  host?: string;
}

export class Client {
  readonly host: string;
  private readonly endpoint: Endpoint;

  constructor(options: ClientOptions = {}) {
    this.host = resolveHost(options.host);
    this.endpoint = parseHost(this.host);
  }

  ping(): Promise<string> {
    return this.request<string>("GET", "/_ping");
  }

  version(): Promise<SystemVersion> {
    return this.request("GET", "/version");
  }

  info(): Promise<SystemInfo> {
    return this.request("GET", "/info");
  }

  networkList(filters?: Filters): Promise<Network[]> {
    return this.request("GET", "/networks", { query: { filters: encodeFilters(filters) } });
  }

  networkInspect(id: string, options: { verbose?: boolean } = {}): Promise<Network> {
    return this.request("GET", `/networks/${encodeURIComponent(id)}`, {
      query: { verbose: options.verbose },
    });
  }

  networkCreate(body: NetworkCreateRequest): Promise<NetworkCreateResponse> {
    return this.request("POST", "/networks/create", { body });
  }

  clusterInfo(): Promise<ClusterInfo> {
    return this.request("GET", "/ctnet/cluster");
  }

  clusterInit(body: { AdvertiseAddr?: string }): Promise<{ NodeName: string; Addr: string }> {
    return this.request("POST", "/ctnet/cluster/init", { body });
  }

  clusterJoin(body: { Addr: string; AdvertiseAddr?: string; Member?: boolean }): Promise<void> {
    return this.request("POST", "/ctnet/cluster/join", { body });
  }

  clusterLeave(): Promise<void> {
    return this.request("POST", "/ctnet/cluster/leave");
  }

  serviceList(options: { filters?: Filters; status?: boolean } = {}): Promise<Service[]> {
    return this.request("GET", "/services", {
      query: { filters: encodeFilters(options.filters), status: options.status },
    });
  }

  serviceCreate(spec: ServiceSpec): Promise<ServiceCreateResponse> {
    return this.request("POST", "/services/create", { body: spec });
  }

  serviceInspect(id: string): Promise<Service> {
    return this.request("GET", `/services/${encodeURIComponent(id)}`);
  }

  /** `version` is the service's Version.Index as read: an update based on an older one is refused. */
  serviceUpdate(id: string, version: number, spec: ServiceSpec): Promise<{ Warnings?: string[] | null }> {
    return this.request("POST", `/services/${encodeURIComponent(id)}/update`, {
      query: { version },
      body: spec,
    });
  }

  serviceRemove(id: string): Promise<void> {
    return this.request("DELETE", `/services/${encodeURIComponent(id)}`);
  }

  taskList(filters?: Filters): Promise<Task[]> {
    return this.request("GET", "/tasks", { query: { filters: encodeFilters(filters) } });
  }

  networkRemove(id: string): Promise<void> {
    return this.request("DELETE", `/networks/${encodeURIComponent(id)}`);
  }

  networkPrune(filters?: Filters): Promise<NetworkPruneResponse> {
    return this.request("POST", "/networks/prune", { query: { filters: encodeFilters(filters) } });
  }

  networkConnect(id: string, body: NetworkConnectRequest): Promise<void> {
    return this.request("POST", `/networks/${encodeURIComponent(id)}/connect`, { body });
  }

  networkDisconnect(id: string, body: NetworkDisconnectRequest): Promise<void> {
    return this.request("POST", `/networks/${encodeURIComponent(id)}/disconnect`, { body });
  }

  containerCreate(body: ContainerCreateRequest, name?: string): Promise<ContainerCreateResponse> {
    return this.request("POST", "/containers/create", { query: { name }, body });
  }

  containerStart(id: string): Promise<void> {
    return this.request("POST", `/containers/${encodeURIComponent(id)}/start`);
  }

  containerStop(id: string, options: { timeout?: number; signal?: string } = {}): Promise<void> {
    return this.request("POST", `/containers/${encodeURIComponent(id)}/stop`, {
      query: { t: options.timeout, signal: options.signal },
    });
  }

  containerRestart(id: string, options: { timeout?: number; signal?: string } = {}): Promise<void> {
    return this.request("POST", `/containers/${encodeURIComponent(id)}/restart`, {
      query: { t: options.timeout, signal: options.signal },
    });
  }

  containerRename(id: string, name: string): Promise<void> {
    return this.request("POST", `/containers/${encodeURIComponent(id)}/rename`, { query: { name } });
  }

  containerKill(id: string, signal?: string): Promise<void> {
    return this.request("POST", `/containers/${encodeURIComponent(id)}/kill`, { query: { signal } });
  }

  containerRemove(id: string, options: { force?: boolean; volumes?: boolean } = {}): Promise<void> {
    return this.request("DELETE", `/containers/${encodeURIComponent(id)}`, {
      query: { force: options.force, v: options.volumes },
    });
  }

  containerInspect(id: string): Promise<ContainerInspect> {
    return this.request("GET", `/containers/${encodeURIComponent(id)}/json`);
  }

  containerList(options: { all?: boolean; filters?: Filters } = {}): Promise<ContainerSummary[]> {
    return this.request("GET", "/containers/json", {
      query: { all: options.all, filters: encodeFilters(options.filters) },
    });
  }

  /**
   * `condition` is Docker's: `not-running` (default), `next-exit` (ask before start so a fast exit
   * is not missed), or `removed` (for auto-removed containers).
   */
  containerWait(
    id: string,
    condition?: "not-running" | "next-exit" | "removed",
  ): Promise<ContainerWaitResponse> {
    return this.request("POST", `/containers/${encodeURIComponent(id)}/wait`, { query: { condition } });
  }

  imageList(options: { all?: boolean; filters?: Filters } = {}): Promise<ImageSummary[]> {
    return this.request("GET", "/images/json", {
      query: { all: options.all, filters: encodeFilters(options.filters) },
    });
  }

  imageInspect(name: string): Promise<ImageInspect> {
    return this.request("GET", `${imagePath(name)}/json`);
  }

  imageRemove(
    name: string,
    options: { force?: boolean; noPrune?: boolean } = {},
  ): Promise<ImageDeleteResponseItem[]> {
    return this.request("DELETE", imagePath(name), {
      query: { force: options.force, noprune: options.noPrune },
    });
  }

  /** Tags `source` (a name or id) as `repo:tag`; the daemon defaults the tag to `latest`. */
  imageTag(source: string, repo: string, tag?: string): Promise<void> {
    return this.request("POST", `${imagePath(source)}/tag`, { query: { repo, tag } });
  }

  /**
   * Imports a root filesystem tarball read from `tar` (streamed to the daemon as it is read) and
   * resolves with the new image's id, the last status line of the progress stream.
   */
  async imageImport(tar: NodeJS.ReadableStream, options: ImageImportOptions = {}): Promise<string> {
    const res = await this.send("POST", "/images/create", {
      query: {
        fromSrc: "-",
        repo: options.repo || undefined,
        tag: options.tag || undefined,
        message: options.message || undefined,
        changes: options.changes,
        platform: options.platform || undefined,
      },
      upload: { stream: tar, contentType: "application/x-tar" },
    });
    if ((res.statusCode ?? 500) >= 400) {
      const err = await apiErrorFrom(res);
      // The daemon may have answered before reading the whole upload: stop sending it.
      res.destroy();
      throw err;
    }
    let id: string | undefined;
    for await (const m of jsonLines(res)) {
      if (m.errorDetail || m.error)
        throw new ProgressError(m.errorDetail?.message ?? m.error ?? "", m.errorDetail?.code);
      options.onProgress?.(m);
      if (m.status) id = m.status;
    }
    if (id === undefined) throw new Error("the daemon's import answer ended without an image id");
    return id;
  }

  /** Streams the container's logs to `out`, demultiplexing stdout and stderr unless it has a TTY. */
  async containerLogs(id: string, options: LogsOptions, out: LogsOutput): Promise<void> {
    let res: IncomingMessage;
    try {
      res = await this.send("GET", `/containers/${encodeURIComponent(id)}/logs`, {
        query: {
          stdout: true,
          stderr: true,
          follow: options.follow,
          tail: options.tail,
          timestamps: options.timestamps,
        },
        signal: options.signal,
      });
    } catch (err) {
      if (options.signal?.aborted) return;
      throw err;
    }
    if ((res.statusCode ?? 500) >= 400) throw await apiErrorFrom(res);
    options.onOpen?.();

    const contentType = res.headers["content-type"] ?? "";
    const multiplexed = contentType.includes("multiplexed-stream")
      ? true
      : contentType.includes("raw-stream")
        ? false
        : !options.tty;
    let daemonError: string | undefined;
    const demuxer = new StreamDemuxer((stream, payload) => {
      if (stream === 3) daemonError = payload.toString();
      else (stream === 2 ? out.stderr : out.stdout).write(payload);
    });
    try {
      for await (const chunk of res) {
        if (multiplexed) demuxer.push(chunk as Buffer);
        else out.stdout.write(chunk as Buffer);
      }
    } catch (err) {
      if (options.signal?.aborted) return;
      throw err;
    }
    if (daemonError !== undefined) throw new ApiError(500, daemonError.trim());
  }

  /** One API call; resolves with the decoded JSON body (or text for non-JSON, undefined if empty). */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, path, options);
    const text = await readBody(res);
    if ((res.statusCode ?? 500) >= 400) throw apiError(res, text);
    if (text === "") return undefined as T;
    if (String(res.headers["content-type"] ?? "").includes("json")) return JSON.parse(text) as T;
    return text as T;
  }

  private send(method: string, path: string, options: RequestOptions): Promise<IncomingMessage> {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(options.query ?? {})) {
      // Docker's CLI leaves false booleans out and sends true as 1; the daemon's defaults are false.
      if (value === undefined || value === false) continue;
      if (Array.isArray(value)) for (const v of value) search.append(key, v);
      else search.set(key, value === true ? "1" : String(value));
    }
    const qs = search.toString();
    const query = qs ? `?${qs}` : "";
    const upload = options.upload;
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    return new Promise((resolve, reject) => {
      const req = http.request({
        ...this.endpoint,
        method,
        path: `/v${API_VERSION}${path}${query}`,
        // A fresh agent per request: no pooled keep-alive socket can hold the CLI's process open.
        agent: false,
        signal: options.signal,
        headers: {
          Host: "ctnet",
          ...(payload ? { "Content-Type": "application/json", "Content-Length": payload.length } : {}),
          ...(upload ? { "Content-Type": upload.contentType, "Transfer-Encoding": "chunked" } : {}),
        },
      });
      req.on("response", resolve);
      req.on("error", (err: NodeJS.ErrnoException) => reject(this.connectionError(err)));
      if (!upload) {
        req.end(payload);
        return;
      }
      // The source's own failure (an unreadable file) is the one to report, not the aborted request.
      upload.stream.once("error", (err) => {
        reject(err);
        req.destroy(err);
      });
      upload.stream.pipe(req);
    });
  }

  private connectionError(err: NodeJS.ErrnoException): Error {
    switch (err.code) {
      case "ENOENT":
      case "ECONNREFUSED":
        return new DaemonConnectionError(
          `cannot connect to the ctnet daemon at ${this.host}: is it running? (ctnet daemon)`,
          err.code,
        );
      case "EACCES":
        return new DaemonConnectionError(
          `permission denied while trying to connect to the ctnet daemon at ${this.host}`,
          err.code,
        );
      default:
        return err;
    }
  }
}

async function readBody(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** The objects of a newline-delimited JSON stream, as they arrive. */
async function* jsonLines(res: IncomingMessage): AsyncGenerator<ProgressMessage> {
  let pending = "";
  // Decoded by the stream so that a character split between chunks stays whole.
  res.setEncoding("utf8");
  for await (const chunk of res) {
    pending += chunk as string;
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) if (line.trim()) yield JSON.parse(line) as ProgressMessage;
  }
  if (pending.trim()) yield JSON.parse(pending) as ProgressMessage;
}

async function apiErrorFrom(res: IncomingMessage): Promise<ApiError> {
  return apiError(res, await readBody(res));
}

function apiError(res: IncomingMessage, text: string): ApiError {
  const status = res.statusCode ?? 500;
  let message = text.trim();
  try {
    const parsed = JSON.parse(text) as { message?: unknown };
    if (typeof parsed?.message === "string") message = parsed.message;
  } catch {
    // Not JSON (a proxy, or a daemon crash mid-reply): the raw text is the best message there is.
  }
  return new ApiError(status, message || `${status} ${res.statusMessage ?? ""}`.trim());
}
