import { closeSync, lstatSync, mkdirSync, openSync, symlinkSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { native } from "../kernel/native.js";

const MS_NOSUID = 0x2;
const MS_NOEXEC = 0x8;
const MS_BIND = 0x1000;
const MNT_DETACH = 0x2;

/** Where the init script, tini and the exit record are, seen from inside an image's root filesystem. */
export const INIT_INSIDE = "/.ctnet-init";
export const TINI_INSIDE = "/.ctnet-tini";
export const EXIT_FILE_INSIDE = "/.ctnet-exitcode";
/** The multiplexer of the container's own devpts instance, under its root: its terminals are /dev/pts/N inside. */
export const PTMX_INSIDE = "dev/pts/ptmx";

/** Device nodes a container needs, bound from the host's (Docker creates the same few). */
const DEVICES = ["null", "zero", "full", "random", "urandom", "tty"];

export interface RootfsLayout {
  /** the image's tree, never written */
  lower: string;
  /** the container's own changes, kept while the container exists */
  upper: string;
  work: string;
  /** the mount point the container sees as / */
  merged: string;
}

export function rootfsLayout(imageRoot: string, containerDir: string): RootfsLayout {
  return {
    lower: imageRoot,
    upper: join(containerDir, "upper"),
    work: join(containerDir, "work"),
    merged: join(containerDir, "rootfs"),
  };
}

/** A regular file at `path` to mount over, replacing a symlink (images often link resolv.conf elsewhere). */
function mountTarget(path: string): void {
  try {
    if (lstatSync(path).isSymbolicLink()) unlinkSync(path);
    else return;
  } catch {
    mkdirSync(dirname(path), { recursive: true });
  }
  closeSync(openSync(path, "a", 0o644));
}

/**
 * Builds a container's root filesystem: an overlay of the image and the container's own layer,
 * with the generated /etc files, ctnet's init (and tini, for a TTY) and a minimal /dev bound in.
 * The mounts live in the host's mount namespace (as Docker's do) so the daemon can take them down
 * after the container is gone; everything under `merged` goes with one lazy unmount.
 */
export function mountRootfs(
  l: RootfsLayout,
  etc: { hosts: string; resolv: string; hostname: string },
  initScript: string,
  tini?: string,
): void {
  for (const dir of [l.upper, l.work, l.merged]) mkdirSync(dir, { recursive: true, mode: 0o755 });
  native.mount(
    "overlay",
    l.merged,
    "overlay",
    0,
    `lowerdir=${l.lower},upperdir=${l.upper},workdir=${l.work}`,
  );
  try {
    for (const [name, source] of [
      ["hosts", etc.hosts],
      ["resolv.conf", etc.resolv],
      ["hostname", etc.hostname],
    ] as const) {
      const target = join(l.merged, "etc", name);
      mountTarget(target);
      native.mount(source, target, "", MS_BIND, "");
    }
    for (const [source, inside] of [
      [initScript, INIT_INSIDE],
      [tini, TINI_INSIDE],
    ] as const) {
      if (!source) continue;
      const target = join(l.merged, inside);
      mountTarget(target);
      native.mount(source, target, "", MS_BIND, "");
    }
    const dev = join(l.merged, "dev");
    mkdirSync(dev, { recursive: true });
    native.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k");
    for (const name of DEVICES) {
      const target = join(dev, name);
      mountTarget(target);
      native.mount(`/dev/${name}`, target, "", MS_BIND, "");
    }
    for (const [name, to] of [
      ["fd", "/proc/self/fd"],
      ["stdin", "/proc/self/fd/0"],
      ["stdout", "/proc/self/fd/1"],
      ["stderr", "/proc/self/fd/2"],
    ] as const) {
      symlinkSync(to, join(dev, name));
    }
    mkdirSync(join(dev, "shm"));
    // A devpts instance of its own, as Docker gives: the container's terminals (and any it opens
    // itself) are numbered from 0 and it cannot reach the host's.
    mkdirSync(join(dev, "pts"));
    native.mount(
      "devpts",
      join(dev, "pts"),
      "devpts",
      MS_NOSUID | MS_NOEXEC,
      "newinstance,ptmxmode=0666,mode=0620,gid=5",
    );
    symlinkSync("pts/ptmx", join(dev, "ptmx"));
    mkdirSync(join(l.merged, "proc"), { recursive: true });
    mkdirSync(join(l.merged, "tmp"), { recursive: true, mode: 0o1777 });
  } catch (err) {
    unmountRootfs(l);
    throw err;
  }
}

/** Takes down the whole tree; a tree that is not mounted is fine. */
export function unmountRootfs(l: RootfsLayout): void {
  native.umount(l.merged, MNT_DETACH);
}
