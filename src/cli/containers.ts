import { spawn } from "node:child_process";
import os from "node:os";
import { Writable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { type Command, CommanderError } from "commander";
import { ApiError, type Client, type ContainerWaitResponse, type LogsOutput } from "../client/client.js";
import { clientOf, collect, forEachName, print, printItems } from "./common.js";
import { describeError, ExitError, UsageError } from "./errors.js";
import { CONTAINER_HEADERS, CONTAINER_TABLE, containerRow, formatList, portLines } from "./format.js";
import { looksLikeImage } from "./reference.js";
import { containerCreateBody, parseFilters } from "./requests.js";
import { parseTemplate } from "./template.js";

/** How long a foreground `run` lets the log stream drain after the container exited. */
const LOG_DRAIN_MS = 1000;

const FORWARDED_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"] as const;

function isNotFound(err: unknown): boolean {
  return err instanceof ApiError && err.status === 404;
}

export function registerContainers(program: Command): void {
  registerRun(program);
  registerExec(program);
  registerLifecycle(program);

  program
    .command("ps")
    .description("List containers")
    .option("-a, --all", "show all containers (default shows just running)")
    .option("-q, --quiet", "only display container IDs")
    .option("--no-trunc", "do not truncate output")
    .option("-f, --filter <FILTER>", "filter output based on conditions provided", collect)
    .option(
      "--format <FORMAT>",
      "format output using a custom template: 'table', 'table TEMPLATE', 'json', or TEMPLATE",
    )
    .action(async (opts, cmd: Command) => {
      const containers = await clientOf(cmd).containerList({
        all: opts.all,
        filters: parseFilters(opts.filter),
      });
      const now = Date.now();
      const rows = containers.map((c) => containerRow(c, opts.trunc === false, now));
      const format = opts.quiet ? "{{.ID}}" : opts.format;
      process.stdout.write(formatList(rows, format, CONTAINER_TABLE, CONTAINER_HEADERS));
    });

  program
    .command("inspect")
    .description("Return low-level information on containers or networks")
    .argument("<name...>")
    .option("-f, --format <TEMPLATE>", "format output using a Go template")
    .option("--type <TYPE>", "only inspect objects of the given type (container or network)")
    .action(async (names: string[], opts, cmd: Command) => {
      if (opts.type && opts.type !== "container" && opts.type !== "network") {
        throw new UsageError(`"${opts.type}" is not a valid value for --type`);
      }
      const client = clientOf(cmd);
      const tmpl = opts.format ? parseTemplate(opts.format) : undefined;
      const found: unknown[] = [];
      await forEachName(names, async (name) => {
        found.push(await inspectAny(client, name, opts.type));
      });
      printItems(found, tmpl);
    });

  program
    .command("port")
    .description("List port mappings or a specific mapping for the container")
    .argument("<container>")
    .argument("[private_port]", "PRIVATE_PORT[/PROTO]")
    .action(async (container: string, privatePort: string | undefined, _opts, cmd: Command) => {
      const info = await clientOf(cmd).containerInspect(container);
      const lines = portLines(info.NetworkSettings?.Ports, container, privatePort);
      if (lines.length > 0) print(lines.join("\n"));
    });

  program
    .command("stop")
    .description("Stop one or more running containers")
    .argument("<container...>")
    .option("-t, --timeout <SECONDS>", "seconds to wait before killing the container", parseSeconds)
    .option("-s, --signal <SIGNAL>", "signal to send to the container")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(names, async (name) => {
        await client.containerStop(name, { timeout: opts.timeout, signal: opts.signal });
        print(name);
      });
    });

  program
    .command("rm")
    .description("Remove one or more containers")
    .argument("<container...>")
    .option("-f, --force", "force the removal of a running container (uses SIGKILL)")
    .option("-v, --volumes", "remove anonymous volumes associated with the container")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(names, async (name) => {
        await client.containerRemove(name, { force: opts.force, volumes: opts.volumes });
        print(name);
      });
    });

  program
    .command("logs")
    .description("Fetch the logs of a container")
    .argument("<container>")
    .option("-f, --follow", "follow log output")
    .option("-t, --timestamps", "show timestamps")
    .option("-n, --tail <N>", 'number of lines to show from the end of the logs (default "all")')
    .action(async (name: string, opts, cmd: Command) => {
      const client = clientOf(cmd);
      const info = await client.containerInspect(name);
      await client.containerLogs(
        info.Id,
        { follow: opts.follow, timestamps: opts.timestamps, tail: opts.tail, tty: info.Config?.Tty },
        { stdout: process.stdout, stderr: process.stderr },
      );
    });
}

function parseSeconds(value: string): number {
  if (!/^-?\d+$/.test(value))
    throw new UsageError(`invalid argument "${value}" for "-t, --timeout": not an integer`);
  return Number(value);
}

/** Docker's `inspect`: a container of that name, else a network, else "No such object". */
async function inspectAny(client: Client, name: string, type?: string): Promise<unknown> {
  if (type !== "network") {
    try {
      return await client.containerInspect(name);
    } catch (err) {
      if (!isNotFound(err) || type === "container") throw err;
    }
  }
  try {
    return await client.networkInspect(name);
  } catch (err) {
    if (isNotFound(err) && !type) throw new UsageError(`Error: No such object: ${name}`);
    throw err;
  }
}

function registerRun(program: Command): void {
  program
    .command("run")
    .description("Create and run a new container from an image, or running COMMAND on the host filesystem")
    .usage("[OPTIONS] [--] [IMAGE] [COMMAND] [ARG...]")
    .argument("[command...]", "an image the daemon has (then its CMD is the default), or the command")
    // Docker's `-h` is the hostname, so help is `--help` only, as in `docker run`.
    .helpOption("--help", "display help for command")
    .passThroughOptions()
    .option("-d, --detach", "run container in background and print container ID")
    .option("--name <NAME>", "assign a name to the container")
    .option("--net, --network <NETWORK>", "connect a container to a network (repeatable)", collect)
    .option("--ip <IP>", "IPv4 address on the first network (e.g. 172.30.100.104)")
    .option("--ip6 <IP>", "IPv6 address on the first network (e.g. 2001:db8::33)")
    .option("--network-alias <NAME>", "add network-scoped alias for the container", collect)
    .option("-h, --hostname <NAME>", "container host name")
    .option("--dns <IP>", "set custom DNS servers", collect)
    .option("-e, --env <KEY=VALUE>", "set environment variables", collect)
    .option(
      "-p, --publish <SPEC>",
      "publish a container's port(s) to the host: [IP:][HOST:]CONTAINER[/PROTO]",
      collect,
    )
    .option("-P, --publish-all", "publish all exposed ports to random ports")
    .option("--expose <PORT>", "expose a port or a range of ports: PORT[-END][/PROTO]", collect)
    .option("--rm", "automatically remove the container when it exits")
    .option("--image <IMAGE>", "run from IMAGE, taking every argument as the command")
    // Docker exits 125 when `run` itself fails, keeping 1–124 for the container's own exit codes.
    .exitOverride((err) => {
      if (err.exitCode === 0) throw err;
      throw new CommanderError(125, err.code, err.message);
    })
    .action(async (args: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      let id: string;
      let waiting: Promise<ContainerWaitResponse> | undefined;
      try {
        let image: string | undefined = opts.image;
        let command = args;
        const [first] = args;
        if (!image && first !== undefined && looksLikeImage(first) && (await imageExists(client, first))) {
          image = first;
          command = args.slice(1);
        }
        const body = containerCreateBody({ ...opts, image, command });
        const created = await client.containerCreate(body, opts.name);
        for (const w of created.Warnings ?? []) process.stderr.write(`WARNING: ${w}\n`);
        id = created.Id;
        if (!opts.detach) {
          // Asked before start, so an exit (or auto-removal) right after start cannot be missed.
          waiting = client.containerWait(id, opts.rm ? "removed" : "next-exit");
          waiting.catch(() => {});
        }
      } catch (err) {
        throw new ExitError(`ctnet: ${describeError(err)}`, 125);
      }
      // A foreground container's log is followed from before its start, so that even a --rm
      // container that exits at once cannot lose its output.
      const foreground = waiting ? await followLogs(client, id) : undefined;
      try {
        await client.containerStart(id);
      } catch (err) {
        foreground?.abort.abort();
        throw new ExitError(`ctnet: ${describeError(err)}`, startFailureCode(err));
      }
      if (!waiting || !foreground) {
        print(id);
        return;
      }
      process.exitCode = await runForeground(client, id, waiting, foreground);
    });
}

/**
 * Whether the daemon has this image. ctnet's `run` also runs host commands, so a first argument
 * that is no image (a 404) is the command, not an error.
 */
export async function imageExists(client: Client, name: string): Promise<boolean> {
  try {
    await client.imageInspect(name);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Docker's codes for a command that could not be started: 127 not found, 126 not executable. */
function startFailureCode(err: unknown): number {
  const message = err instanceof Error ? err.message : "";
  if (/executable file not found|no such file or directory/i.test(message)) return 127;
  if (/permission denied|is a directory/i.test(message)) return 126;
  return 125;
}

interface FollowedLogs {
  abort: AbortController;
  done: Promise<void>;
}

/**
 * Starts following a container's log and resolves once the daemon has the stream open. The first
 * `skip` bytes (what an earlier run wrote) are not printed.
 */
async function followLogs(client: Client, id: string, skip = 0): Promise<FollowedLogs> {
  const abort = new AbortController();
  const out = { stdout: process.stdout, stderr: process.stderr };
  let opened = () => {};
  const open = new Promise<void>((resolve) => {
    opened = resolve;
  });
  const done = client
    .containerLogs(
      id,
      { follow: true, tty: false, signal: abort.signal, onOpen: () => opened() },
      skip > 0 ? skipFirst(skip, out) : out,
    )
    .catch((err) => {
      if (!isNotFound(err)) process.stderr.write(`${describeError(err)}\n`);
    })
    .finally(() => opened());
  await open;
  return { abort, done };
}

/** Output that drops the first `bytes` written across both streams, in the order they arrive. */
function skipFirst(bytes: number, out: LogsOutput): LogsOutput {
  let left = bytes;
  const pass = (target: NodeJS.WritableStream) =>
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        const drop = Math.min(left, chunk.length);
        left -= drop;
        if (drop < chunk.length) target.write(chunk.subarray(drop));
        done();
      },
    });
  return { stdout: pass(out.stdout), stderr: pass(out.stderr) };
}

/** How many bytes of output the container's log holds so far. */
async function loggedBytes(client: Client, id: string): Promise<number> {
  let bytes = 0;
  const count = new Writable({
    write(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      done();
    },
  });
  await client.containerLogs(id, { tty: false }, { stdout: count, stderr: count });
  return bytes;
}

/**
 * Waits for a started container to exit while its followed log is printed, forwarding signals
 * to it, and returns its exit code.
 */
async function runForeground(
  client: Client,
  id: string,
  waiting: Promise<ContainerWaitResponse>,
  followed: FollowedLogs,
): Promise<number> {
  const { abort, done: logs } = followed;
  const forward = (signal: NodeJS.Signals) => {
    client.containerKill(id, signal).catch(() => {});
  };
  for (const s of FORWARDED_SIGNALS) process.on(s, forward);
  try {
    const result = await waiting;
    // The daemon ends a followed stream when the container stops; the bound guards against one that does not.
    await Promise.race([logs, delay(LOG_DRAIN_MS, undefined, { ref: false })]);
    abort.abort();
    await logs;
    if (result.Error?.Message) process.stderr.write(`ctnet: ${result.Error.Message}\n`);
    return result.StatusCode;
  } catch (err) {
    abort.abort();
    throw new ExitError(`ctnet: ${describeError(err)}`, 125);
  } finally {
    for (const s of FORWARDED_SIGNALS) process.off(s, forward);
  }
}

function registerExec(program: Command): void {
  program
    .command("exec")
    .description("Run a command in a running container")
    .usage("[OPTIONS] CONTAINER [--] COMMAND [ARG...]")
    .argument("<container>")
    .argument("<command...>")
    .passThroughOptions()
    .option("-i, --interactive", "keep STDIN open (stdin is always passed through)")
    .option("-t, --tty", "allocate a pseudo-TTY (the caller's terminal is used as is)")
    /*
     * The API's exec endpoints (POST /containers/{id}/exec, /exec/{id}/start) come later; until
     * then exec enters the container's namespaces with nsenter, so it only works on the daemon's
     * own host and needs the privileges to setns into them.
     */
    .action(async (container: string, command: string[], _opts, cmd: Command) => {
      const info = await clientOf(cmd).containerInspect(container);
      const pid = info.State?.Pid;
      if (!info.State?.Running || !pid) throw new UsageError(`container ${info.Id} is not running`);
      // --root and --wd: a container made from an image is rooted in its own filesystem.
      const args = [
        "--target",
        String(pid),
        "--net",
        "--uts",
        "--ipc",
        "--mount",
        "--pid",
        "--root",
        "--wd",
        "--",
        ...command,
      ];
      process.exitCode = await spawnInherited("nsenter", args);
    });
}

function spawnInherited(file: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: "inherit" });
    // The terminal delivers ^C to the whole process group; the child decides what it means.
    const ignore = () => {};
    process.on("SIGINT", ignore);
    child.on("error", (err: NodeJS.ErrnoException) => {
      process.off("SIGINT", ignore);
      reject(
        err.code === "ENOENT" ? new UsageError(`${file} not found: exec needs util-linux's ${file}`) : err,
      );
    });
    child.on("exit", (code, signal) => {
      process.off("SIGINT", ignore);
      resolve(code ?? 128 + (signal ? osSignalNumber(signal) : 0));
    });
  });
}

function osSignalNumber(signal: NodeJS.Signals): number {
  return (os.constants.signals as Record<string, number>)[signal] ?? 0;
}

function registerLifecycle(program: Command): void {
  program
    .command("start")
    .description("Start one or more stopped containers")
    .argument("<container...>")
    .option("-a, --attach", "attach STDOUT/STDERR and forward signals")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      if (opts.attach) {
        if (names.length > 1) throw new UsageError("you cannot start and attach multiple containers at once");
        process.exitCode = await startAttached(client, names[0] as string);
        return;
      }
      await forEachName(names, async (name) => {
        // A running container answers 304, which is no error: docker prints its name all the same.
        await client.containerStart(name);
        print(name);
      });
    });

  program
    .command("restart")
    .description("Restart one or more containers")
    .argument("<container...>")
    .option("-s, --signal <SIGNAL>", "signal to send to the container")
    .option("-t, --timeout <SECONDS>", "seconds to wait before killing the container", parseSeconds)
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(names, async (name) => {
        await client.containerRestart(name, { timeout: opts.timeout, signal: opts.signal });
        print(name);
      });
    });

  program
    .command("kill")
    .description("Kill one or more running containers")
    .argument("<container...>")
    .option("-s, --signal <SIGNAL>", "signal to send to the container")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(names, async (name) => {
        await client.containerKill(name, opts.signal);
        print(name);
      });
    });

  program
    .command("wait")
    .description("Block until one or more containers stop, then print their exit codes")
    .argument("<container...>")
    .action(async (names: string[], _opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(names, async (name) => {
        print(String((await client.containerWait(name)).StatusCode));
      });
    });

  program
    .command("rename")
    .description("Rename a container")
    .argument("<container>")
    .argument("<new_name>")
    .action(async (container: string, newName: string, _opts, cmd: Command) => {
      const name = newName.trim();
      if (!container.trim() || !name) throw new UsageError("Error: Neither old nor new names may be empty");
      try {
        await clientOf(cmd).containerRename(container, name);
      } catch (err) {
        // docker prints the daemon's reason, then its own summary as the error.
        process.stderr.write(`${describeError(err)}\n`);
        throw new UsageError(`Error: failed to rename container named ${container}`);
      }
    });
}

/**
 * `start -a`: the container's new output (not what earlier runs logged) until it exits, with
 * signals forwarded; resolves with its exit code.
 */
async function startAttached(client: Client, name: string): Promise<number> {
  const info = await client.containerInspect(name);
  const skip = await loggedBytes(client, info.Id);
  const waiting = client.containerWait(info.Id, info.HostConfig?.AutoRemove ? "removed" : "next-exit");
  waiting.catch(() => {});
  const followed = await followLogs(client, info.Id, skip);
  try {
    await client.containerStart(info.Id);
  } catch (err) {
    followed.abort.abort();
    throw err;
  }
  return runForeground(client, info.Id, waiting, followed);
}
