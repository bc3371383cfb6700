import { join } from "node:path";
import type { SandboxHandle } from "../drivers/driver.js";
import { Netlink } from "../kernel/netlink.js";
import { createNetns, deleteNetns } from "../kernel/netns.js";

/**
 * Sandboxes are network namespaces bind-mounted under <exec-root>/netns, named by container id.
 * Netlink sockets into them are cached while they exist: opening one costs a namespace switch.
 */
export class Sandboxes {
  private readonly sockets = new Map<string, Netlink>();

  constructor(private readonly dir: string) {}

  pathFor(containerId: string): string {
    return join(this.dir, containerId.slice(0, 12));
  }

  async create(containerId: string): Promise<SandboxHandle> {
    const path = this.pathFor(containerId);
    createNetns(path);
    try {
      const handle = this.handle(path);
      await handle.netlink.setUp("lo");
      return handle;
    } catch (err) {
      this.destroy(path);
      throw err;
    }
  }

  handle(path: string): SandboxHandle {
    let nl = this.sockets.get(path);
    if (!nl) {
      nl = Netlink.open(path);
      this.sockets.set(path, nl);
    }
    return { path, netlink: nl };
  }

  /** Deleting the namespace takes its interfaces, and so the veth pairs, with it. */
  destroy(path: string): void {
    this.sockets.get(path)?.close();
    this.sockets.delete(path);
    deleteNetns(path);
  }
}
