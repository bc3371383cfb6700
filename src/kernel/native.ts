/**
 * Typed access to ctnet's native addon (native/ctnet.c). Every function switches only the calling
 * thread's network namespace and switches it back before returning.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export interface NftResult {
  ok: boolean;
  output: string;
  error: string;
}

export type SocketKind = "udp4" | "tcp4" | "udp6" | "tcp6";

export interface NativeAddon {
  /** setns(2) on the calling thread. */
  setns(fd: number, nstype: number): void;
  /** A new network namespace kept alive by a bind mount at `path` (the file must not exist). */
  netnsCreate(path: string): void;
  /** Unmount and unlink; a missing or unmounted path is not an error. */
  netnsDelete(path: string): void;
  /** socket(2) inside the namespace at `nsPath`; the fd is close-on-exec. */
  socketInNetns(nsPath: string, domain: number, type: number, protocol: number): number;
  /** A socket made in `nsPath`, bound to address:port and, for TCP, listening; non-blocking. */
  boundSocketInNetns(nsPath: string, kind: SocketKind, address: string, port: number): number;
  /**
   * posix_spawn in a new session with stdin from /dev/null and only stdout/stderr inherited
   * (every other descriptor is closed in the child). Returns the pid.
   */
  spawnDetached(argv: string[], env: string[], stdoutFd: number, stderrFd: number): number;
  /**
   * Calls back once when the process exits (pidfd on the event loop; does not keep it alive).
   * For a child of this process: its exit code or signal; otherwise both are -1.
   */
  watchExit(pid: number, callback: (code: number, signal: number) => void): void;
  /** A pseudo-terminal pair, both ends close-on-exec; the master is non-blocking. */
  openpty(): { master: number; slave: number };
  /** TIOCSWINSZ on a terminal: its foreground process group gets SIGWINCH. */
  ptyResize(fd: number, rows: number, cols: number): void;
  /** pipe(2): [read end, write end], both close-on-exec. */
  pipe(): [number, number];
  /** A pseudo-terminal pair from the devpts instance of `ptmxPath` (as openpty: close-on-exec, non-blocking master). */
  openptyIn(ptmxPath: string): { master: number; slave: number };
  /**
   * posix_spawn in a new session where the child's descriptor i is `fds[i]` (-1 for /dev/null) and
   * no other is inherited; with `ctty`, `fds[0]` is a terminal that becomes its controlling one.
   */
  spawnStdio(argv: string[], env: string[], fds: number[], ctty: boolean): number;
  /** pidfd_getfd(2): a close-on-exec copy of descriptor `fd` of process `pid`. */
  pidfdGetfd(pid: number, fd: number): number;
  /** mount(2); "" for fstype or data passes NULL. */
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  /** umount2(2); a target that is not mounted or missing is not an error. */
  umount(target: string, flags: number): void;
  /** Present only when the addon was built against libnftables. */
  nftRun?(text: string): NftResult;
  hasNftables: boolean;
}

/** Errors thrown by the addon carry errno details the way Node's own system errors do. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
}

// Resolved relative to this file so it works from src/kernel (tsx) and dist/kernel (tsc) alike.
const addonUrl = new URL("../../build/Release/ctnet.node", import.meta.url);

function load(): NativeAddon {
  try {
    return createRequire(import.meta.url)(fileURLToPath(addonUrl)) as NativeAddon;
  } catch (err) {
    const cause = err as NodeJS.ErrnoException;
    if (cause.code === "MODULE_NOT_FOUND" || cause.code === "ENOENT") {
      throw new Error(
        `ctnet's native addon is not built (${fileURLToPath(addonUrl)} is missing): run npm run build`,
        { cause },
      );
    }
    throw new Error(`cannot load ctnet's native addon: ${cause.message}`, { cause });
  }
}

export const native: NativeAddon = load();

/** From <sched.h>. */
export const CLONE_NEWNET = 0x40000000;

/** From <sys/socket.h> (Linux). */
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
