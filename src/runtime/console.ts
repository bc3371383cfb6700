/**
 * The standard streams of containers that clients attach to (Docker's -i and -t, and a foreground
 * `docker run`). The daemon relays them: a pseudo-terminal with a TTY, pipes without; what the
 * container prints goes to its log file and to every attached client, and clients' input goes to
 * the container. Other containers write their log file themselves and read /dev/null.
 *
 * The runner (the process that starts the container and lives exactly as long as it) keeps copies
 * of the daemon's ends at fixed descriptors, so the daemon can die without the container's terminal
 * hanging up or its output pipes breaking; a restarted daemon takes them back with pidfd_getfd(2).
 * While no daemon reads, output waits in the kernel's buffers and the container blocks once they
 * are full. Input is the exception: with StdinOnce, stdin closes when the attached client's input
 * ends, so only the daemon holds its write end and a daemon that dies closes it too (its client's
 * connection went with it).
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { Socket } from "node:net";
import type { Readable } from "node:stream";
import { Writable } from "node:stream";
import { ReadStream } from "node:tty";
import { native } from "../kernel/native.js";
import { log } from "../log.js";

/** Docker's create options for the container's standard streams. */
export interface StdioConfig {
  tty: boolean;
  openStdin: boolean;
  /** close stdin once the first attached client's input ends */
  stdinOnce: boolean;
  attachStdin: boolean;
  attachStdout: boolean;
  attachStderr: boolean;
  /** [rows, cols] of the terminal at start (HostConfig.ConsoleSize) */
  consoleSize?: [number, number];
}

export const NO_STDIO: StdioConfig = {
  tty: false,
  openStdin: false,
  stdinOnce: false,
  attachStdin: false,
  attachStdout: false,
  attachStderr: false,
};

/** Whether the daemon relays the container's streams (a client will attach, or may type into it). */
export function isRelayed(s: StdioConfig): boolean {
  return s.tty || s.openStdin || s.attachStdin || s.attachStdout || s.attachStderr;
}

/** Stream 1 is stdout (and everything with a TTY), 2 stderr, as in Docker's multiplexed format. */
export type StreamId = 1 | 2;

/** The runner's copies: the terminal's master, or stdout's and stderr's read ends and stdin's write end. */
const HELD_MASTER = 3;
const HELD_STDOUT = 3;
const HELD_STDERR = 4;
const HELD_STDIN = 5;

const PTY_RETRY_MS = 10;

/**
 * Input for a terminal's master, written directly (the master is non-blocking) and retried while
 * the terminal's input buffer is full, so that a process that does not read stalls only its writer.
 */
export function terminalInput(master: number, isOpen: () => boolean): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      let offset = 0;
      const attempt = () => {
        while (isOpen() && offset < chunk.length) {
          try {
            offset += writeSync(master, chunk, offset);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === "EAGAIN") {
              setTimeout(attempt, PTY_RETRY_MS);
              return;
            }
            done(err as Error);
            return;
          }
        }
        done();
      };
      attempt();
    },
  });
}

/** What the daemon holds of one run of the container. */
interface RelayFds {
  master?: number;
  stdout?: number;
  stderr?: number;
  stdin?: number;
}

/** One run's streams on the daemon's side: reads output, takes input, ends when the container's side has closed. */
class Relay {
  private readonly sources: { stream: StreamId; readable: Readable }[] = [];
  readonly input: Writable | undefined;
  private readonly master: number | undefined;
  private masterOpen = true;

  constructor(fds: RelayFds, onData: (stream: StreamId, data: Buffer) => void, onEnd: () => void) {
    this.master = fds.master;
    if (fds.master !== undefined) {
      const master = fds.master;
      // A tty handle polls the master on the event loop; a read stream on the file would pin a
      // thread-pool thread for the container's whole life.
      const out = new ReadStream(master);
      out.on("close", () => {
        this.masterOpen = false;
      });
      this.sources.push({ stream: 1, readable: out });
      this.input = terminalInput(master, () => this.masterOpen);
    } else {
      if (fds.stdout !== undefined)
        this.sources.push({
          stream: 1,
          readable: new Socket({ fd: fds.stdout, readable: true, writable: false }),
        });
      if (fds.stderr !== undefined)
        this.sources.push({
          stream: 2,
          readable: new Socket({ fd: fds.stderr, readable: true, writable: false }),
        });
      if (fds.stdin !== undefined)
        this.input = new Socket({ fd: fds.stdin, readable: false, writable: true });
    }
    // A container that exits or closes its stdin must not crash the daemon with EPIPE.
    this.input?.on("error", () => undefined);
    let open = this.sources.length;
    for (const { stream, readable } of this.sources) {
      readable.on("data", (d: Buffer) => onData(stream, d));
      // A terminal's master reads EIO once the container's last process has closed it.
      readable.on("error", () => undefined);
      readable.once("close", () => {
        if (--open > 0) return;
        this.input?.destroy();
        onEnd();
      });
    }
  }

  pause(): void {
    for (const s of this.sources) s.readable.pause();
  }

  resume(): void {
    for (const s of this.sources) s.readable.resume();
  }

  resize(rows: number, cols: number): void {
    if (this.master !== undefined && this.masterOpen) native.ptyResize(this.master, rows, cols);
  }

  closeInput(): void {
    this.input?.end();
  }
}

/** Where an attached client's output goes; the API frames it for the client. */
export interface AttachSink {
  /** Output of stream 1 (stdout, or the terminal) or 2 (stderr); false while the client is behind. */
  write(stream: StreamId, data: Buffer): boolean;
  /** No more output: ends the client's stream. */
  end(): void;
  /** The client's connection: 'drain' after write() said false, 'close' when the client is gone. */
  readonly connection: NodeJS.EventEmitter;
}

export interface AttachRequest {
  sink: AttachSink;
  /** the client sends input (its end, or its going away, counts for StdinOnce) */
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

/** What an attached client can do. */
export interface Attached {
  /** Passes the client's input to the container (dropped when the container does not keep stdin open). */
  input(data: Buffer): void;
  /** The client's input ended: closes the container's stdin with StdinOnce, else ends this client's stream. */
  inputEnd(): void;
  /** Ends this client's stream; the container and its input stay as they are (detach keys). */
  detach(): void;
}

interface Client {
  req: AttachRequest;
  ended: boolean;
  /** no more input will come from this client (or it sends none) */
  inputDone: boolean;
}

/** The descriptors for launching a relayed container, and what to do once it is (or is not) spawned. */
export interface LaunchStdio {
  /** the child's stdin, stdout and stderr, then the runner's copies of the daemon's ends (3, 4, 5) */
  fds: number[];
  /** fds[0] is a terminal: it becomes the container's controlling terminal */
  tty: boolean;
  /** after a successful spawn: the daemon closes the container's ends and starts relaying */
  spawned(): void;
  /** the spawn failed: everything is closed */
  abort(): void;
}

/**
 * A container's streams across its runs: the clients attached to it (a client attached before a
 * start follows that run, as `docker start -a` needs) and the relay of the current run.
 */
export class ContainerStreams {
  private readonly clients = new Set<Client>();
  /** clients whose connection is behind: the relay is paused until they drain */
  private readonly behind = new Set<Client>();
  private relay: Relay | undefined;
  private logFd: number | undefined;
  /** input that came before the run started, and whether the stdin-once client's input already ended */
  private pending: Buffer[] = [];
  private pendingClose = false;
  private stdinClosed = false;
  private removed = false;

  constructor(
    readonly config: StdioConfig,
    private readonly logPath: string,
    private readonly onGone: () => void,
  ) {}

  /** Makes the terminal or pipes for a new run. `ptmx`: the container's own devpts instance. */
  prepare(ptmx: string | undefined): LaunchStdio {
    const c = this.config;
    const mine: number[] = [];
    const theirs: number[] = [];
    const close = (fds: number[]) => {
      for (const fd of fds.splice(0)) closeSync(fd);
    };
    try {
      let fds: number[];
      let relayFds: RelayFds;
      if (c.tty) {
        const { master, slave } = ptmx ? native.openptyIn(ptmx) : native.openpty();
        mine.push(master);
        theirs.push(slave);
        if (c.consoleSize) native.ptyResize(master, c.consoleSize[0], c.consoleSize[1]);
        fds = [slave, slave, slave, master];
        relayFds = { master };
      } else {
        const [outR, outW] = native.pipe();
        mine.push(outR);
        theirs.push(outW);
        const [errR, errW] = native.pipe();
        mine.push(errR);
        theirs.push(errW);
        let stdinR = -1;
        relayFds = { stdout: outR, stderr: errR };
        const held = [outR, errR];
        if (c.openStdin) {
          const [r, w] = native.pipe();
          mine.push(w);
          theirs.push(r);
          stdinR = r;
          relayFds.stdin = w;
          if (!c.stdinOnce) held.push(w);
        }
        fds = [stdinR, outW, errW, ...held];
      }
      return {
        fds,
        tty: c.tty,
        spawned: () => {
          // Only the container may hold its ends: the daemon's copies would keep its output open.
          close(theirs);
          mine.length = 0;
          this.begin(relayFds);
        },
        abort: () => {
          close(theirs);
          close(mine);
        },
      };
    } catch (err) {
      close(theirs);
      close(mine);
      throw err;
    }
  }

  /** Takes the daemon's ends back from the runner of a container that outlived a daemon. */
  reopen(runnerPid: number): void {
    const c = this.config;
    const take = (fd: number) => native.pidfdGetfd(runnerPid, fd);
    if (c.tty) {
      this.begin({ master: take(HELD_MASTER) });
      return;
    }
    const fds: RelayFds = { stdout: take(HELD_STDOUT), stderr: take(HELD_STDERR) };
    // With StdinOnce the daemon held stdin alone: it closed when the daemon went.
    if (c.openStdin && !c.stdinOnce) fds.stdin = take(HELD_STDIN);
    this.begin(fds, c.openStdin && c.stdinOnce);
  }

  private begin(fds: RelayFds, stdinClosed = false): void {
    this.logFd = openSync(this.logPath, "a", 0o640);
    this.stdinClosed = stdinClosed;
    const relay = new Relay(
      fds,
      (stream, data) => this.output(stream, data),
      () => this.finish(),
    );
    this.relay = relay;
    const pending = this.pending;
    this.pending = [];
    for (const chunk of pending) relay.input?.write(chunk);
    if (this.pendingClose) {
      this.pendingClose = false;
      this.closeStdin();
    }
  }

  private output(stream: StreamId, data: Buffer): void {
    if (this.logFd !== undefined) {
      try {
        writeSync(this.logFd, data);
      } catch (err) {
        log.warn({ err }, "cannot write a container's log");
      }
    }
    for (const client of this.clients) {
      const { stdout, stderr } = client.req;
      const wanted = this.config.tty ? stdout || stderr : stream === 1 ? stdout : stderr;
      if (!wanted || client.ended) continue;
      if (!client.req.sink.write(stream, data) && !this.behind.has(client)) {
        this.behind.add(client);
        this.relay?.pause();
        client.req.sink.connection.once("drain", () => this.caughtUp(client));
      }
    }
  }

  private caughtUp(client: Client): void {
    if (this.behind.delete(client) && this.behind.size === 0) this.relay?.resume();
  }

  /** The run is over and all its output is out: every client's stream ends with it. */
  private finish(): void {
    if (this.logFd !== undefined) closeSync(this.logFd);
    this.logFd = undefined;
    this.relay = undefined;
    this.stdinClosed = false;
    this.pending = [];
    this.pendingClose = false;
    for (const client of [...this.clients]) this.endClient(client);
    if (this.removed) this.onGone();
  }

  private endClient(client: Client): void {
    if (client.ended) return;
    client.ended = true;
    this.clients.delete(client);
    this.caughtUp(client);
    client.req.sink.end();
  }

  private closeStdin(): void {
    this.stdinClosed = true;
    this.relay?.closeInput();
  }

  attach(req: AttachRequest): Attached {
    const client: Client = { req, ended: false, inputDone: !req.stdin };
    this.clients.add(client);
    const inputEnd = () => {
      // A client whose stream the daemon ended (its run is over) says nothing about the next run.
      if (client.inputDone || client.ended) return;
      client.inputDone = true;
      if (!this.config.openStdin || this.stdinClosed) return;
      if (this.config.stdinOnce && !this.config.tty) {
        if (this.relay) this.closeStdin();
        else this.pendingClose = true;
      } else {
        // As Docker: without StdinOnce (or with a TTY) the container's stdin stays open; the
        // client that stopped typing stops following too.
        this.endClient(client);
      }
    };
    req.sink.connection.once("close", () => {
      // A client that goes away has ended its input too (StdinOnce closes stdin then, as Docker).
      inputEnd();
      this.clients.delete(client);
      client.ended = true;
      this.caughtUp(client);
    });
    return {
      input: (data) => {
        if (client.inputDone || !this.config.openStdin || this.stdinClosed) return;
        if (this.relay) this.relay.input?.write(data);
        else this.pending.push(data);
      },
      inputEnd,
      detach: () => {
        client.inputDone = true;
        this.endClient(client);
      },
    };
  }

  resize(rows: number, cols: number): void {
    this.relay?.resize(rows, cols);
  }

  /** The container is being removed: clients end now, or once the last run's output is out. */
  remove(): void {
    this.removed = true;
    if (this.relay) return;
    for (const client of [...this.clients]) this.endClient(client);
    this.onGone();
  }
}

/** The streams of every relayed container, by container id. */
export class Consoles {
  private readonly byId = new Map<string, ContainerStreams>();

  /** The container's streams (made on first use: a client may attach before the first start). */
  of(id: string, config: StdioConfig, logPath: string): ContainerStreams {
    let s = this.byId.get(id);
    if (!s) {
      s = new ContainerStreams(config, logPath, () => {
        if (this.byId.get(id) === s) this.byId.delete(id);
      });
      this.byId.set(id, s);
    }
    return s;
  }

  remove(id: string): void {
    this.byId.get(id)?.remove();
  }
}
