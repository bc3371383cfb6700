/**
 * Network namespaces by path. A namespace here is a file with the namespace bind-mounted on it
 * (what `ip netns add` makes under /run/netns), so any path on an ordinary directory works too.
 *
 * Switching is per thread and synchronous: withNetns() switches the calling thread, runs the
 * callback and switches back before returning. Nothing may be awaited while switched, because
 * other callbacks of the event loop would then run in the wrong namespace.
 */
import { closeSync, openSync, statfsSync, writeSync } from "node:fs";
import { types } from "node:util";
import { CLONE_NEWNET, type NativeError, native, type SocketKind } from "./native.js";

const SELF_NETNS = "/proc/thread-self/ns/net";
/** statfs(2) f_type of a bind-mounted namespace file. */
const NSFS_MAGIC = 0x6e736673;

/** Creates a new, empty network namespace kept at `path` (parent directory must exist). */
export function createNetns(path: string): void {
  native.netnsCreate(path);
}

/** Removes the namespace at `path`; idempotent. Interfaces in it go away with its last user. */
export function deleteNetns(path: string): void {
  native.netnsDelete(path);
}

/** Whether a namespace is mounted at `path` (one statfs call; false when the file is missing). */
export function isNetnsMounted(path: string): boolean {
  try {
    return statfsSync(path).type === NSFS_MAGIC;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

function switchBack(saved: number): void {
  try {
    native.setns(saved, CLONE_NEWNET);
  } catch (err) {
    // Continuing would run every later kernel call of this thread in the wrong namespace.
    writeSync(2, `ctnet: cannot switch back to the original network namespace: ${(err as Error).message}\n`);
    process.abort();
  } finally {
    closeSync(saved);
  }
}

/**
 * Runs `fn` with the calling thread in the namespace at `path` and always switches back, also
 * when `fn` throws. `fn` must be synchronous: an async function is refused before it runs, and a
 * returned promise is an error (its continuations would run outside the namespace).
 */
export function withNetns<T>(path: string, fn: () => T): T {
  if (types.isAsyncFunction(fn)) {
    throw new TypeError("withNetns needs a synchronous function: awaiting while switched is not allowed");
  }
  const target = openSync(path, "r");
  let saved = -1;
  try {
    saved = openSync(SELF_NETNS, "r");
    native.setns(target, CLONE_NEWNET);
  } catch (err) {
    if (saved >= 0) closeSync(saved);
    if ((err as NativeError).code === "EINVAL") {
      throw new Error(`${path} is not a network namespace`, { cause: err });
    }
    throw err;
  } finally {
    closeSync(target);
  }
  let result: T;
  try {
    result = fn();
  } finally {
    switchBack(saved);
  }
  if (types.isPromise(result)) {
    throw new TypeError("withNetns callback returned a Promise: awaiting while switched is not allowed");
  }
  return result;
}

/** socket(2) inside the namespace at `nsPath` (close-on-exec); the caller owns the fd. */
export function socketInNetns(nsPath: string, domain: number, type: number, protocol = 0): number {
  return native.socketInNetns(nsPath, domain, type, protocol);
}

/**
 * A non-blocking socket made in `nsPath` and bound to address:port there (TCP also listening),
 * ready for `dgram` `bind({ fd })` or `net.Server` `listen({ fd })`. Port 0 picks a free port.
 */
export function boundSocketInNetns(nsPath: string, kind: SocketKind, address: string, port: number): number {
  return native.boundSocketInNetns(nsPath, kind, address, port);
}
