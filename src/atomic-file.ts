import { closeSync, fdatasyncSync, fsyncSync, openSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

export const TMP_SUFFIX = ".tmp";

/**
 * Replaces `path` with `data` so that an interruption at any point (SIGKILL, power cut) leaves
 * the old content or the new one, never a torn file: write a temporary file, flush it, rename it
 * over. `durable` also flushes the directory, so the rename itself survives a power cut (a few
 * milliseconds more: worth it for rare writes, not on hot paths, where losing the newest write on
 * power loss is acceptable and the old record is still intact).
 */
export function writeFileAtomic(
  path: string,
  data: string,
  o: { mode?: number; durable?: boolean } = {},
): void {
  const tmp = path + TMP_SUFFIX;
  const fd = openSync(tmp, "w", o.mode ?? 0o600);
  try {
    writeSync(fd, data);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  if (o.durable) syncDir(dirname(path));
}

/** Renames are only durable once their directory is flushed. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
