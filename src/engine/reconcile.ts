import { spawnSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { endpointAlias, networkAlias } from "../drivers/aliases.js";
import { deleteNetns, isNetnsMounted } from "../kernel/netns.js";
import { log } from "../log.js";
import { isAlive, readExitCode } from "../runtime/process.js";
import type { Containers } from "./containers.js";
import type { EngineContext } from "./context.js";
import { INGRESS_SANDBOX } from "./ingress-sandbox.js";
import { firewallState, type Networks } from "./networks.js";
import type { ContainerRecord, EndpointRecord, NetworkRecord } from "./types.js";

/**
 * Start-up repair. The store says what should exist; the kernel says what does. Whatever a crash
 * left half-made is settled here: links and namespaces ctnet owns but no record explains are
 * removed, missing networks and endpoints of running containers are recreated, containers that
 * died while the daemon was away are marked exited, and the firewall is loaded whole.
 */
export async function reconcile(
  ctx: EngineContext,
  networks: Networks,
  containers: Containers,
): Promise<void> {
  for (const n of await ctx.store.list<NetworkRecord>("networks/")) ctx.networks.set(n.id, n);
  for (const e of await ctx.store.list<EndpointRecord>("endpoints/")) ctx.endpoints.set(e.id, e);
  for (const c of await ctx.store.list<ContainerRecord>("containers/")) ctx.containers.set(c.id, c);

  // Global networks are in the view already (from the cluster's mirror), with their pools.
  for (const n of ctx.networks.values())
    if (n.scope !== "global") for (const p of n.pools) ctx.ipam.restorePool(n.id, p);
  for (const e of [...ctx.endpoints.values()]) {
    const net = ctx.networks.get(e.networkId);
    const c = ctx.containers.get(e.containerId);
    // The ingress sandbox has no container; the routing mesh repairs or removes it once the cluster is followed.
    const live = c?.state.status === "running" || e.containerId === INGRESS_SANDBOX;
    if (!net || !live) {
      await ctx.dropEndpoint(e.id);
      continue;
    }
    for (const address of [e.ipv4, e.ipv6]) {
      const pool = address && net.pools.find((p) => p.family === (address.includes(":") ? 6 : 4));
      if (!address || !pool) continue;
      try {
        ctx.ipamOf(net).restoreAddress(net.id, pool.subnet, address);
      } catch (err) {
        // Only a global network can get here: another host claimed the address while this one was away.
        log.error({ err, network: net.name, address }, "address of a local endpoint is taken");
      }
    }
  }

  await removeLeftoverLinks(ctx);
  for (const n of ctx.networks.values()) {
    // A driver notes in the record what it found (e.g. that a bridge it made is gone and an
    // adopted one took its place), so a changed record is stored again.
    const before = JSON.stringify(n);
    await ctx.driver(n.driver).createNetwork(n);
    if (JSON.stringify(n) !== before) await ctx.saveNetwork(n);
  }
  await networks.ensurePredefined();

  mkdirSync(ctx.netnsDir(), { recursive: true, mode: 0o755 });
  for (const c of ctx.containers.values()) {
    if (c.state.status !== "running") continue;
    if (!isAlive(c.state.pid, c.state.pidStartTime)) {
      log.info({ container: c.name }, "container exited while the daemon was down");
      await containers.markExited(c, readExitCode(containers.exitFile(c)) ?? 137);
      continue;
    }
    const ownSandbox = c.networkMode.kind === "bridge" || c.networkMode.kind === "none";
    if (ownSandbox && !isNetnsMounted(c.sandboxPath)) rebindNetns(c);
    await containers.adopt(c);
  }
  removeLeftoverNetns(ctx);
  await restorePorts(ctx);
  ctx.firewall.load(firewallState(ctx.networks.values(), ctx.endpoints.values(), ctx.containers.values()));
}

/**
 * Takes back the host ports of running containers. A port another process grabbed while the
 * daemon was down cannot be forwarded without stealing it: that container's ports are dropped,
 * loudly, rather than the daemon refusing to start.
 */
async function restorePorts(ctx: EngineContext): Promise<void> {
  for (const c of ctx.containers.values()) {
    if (c.state.status !== "running" || c.published.length === 0) continue;
    try {
      await ctx.ports.restore(c.published);
    } catch (err) {
      log.error(
        { err, container: c.name },
        "cannot take back the container's published ports; they are not forwarded",
      );
      c.published = [];
      await ctx.saveContainer(c);
    }
  }
}

async function removeLeftoverLinks(ctx: EngineContext): Promise<void> {
  const owned = new Set<string>();
  for (const n of ctx.networks.values()) owned.add(networkAlias(n.id));
  for (const e of ctx.endpoints.values()) owned.add(endpointAlias(e.id));
  for (const link of await ctx.host.listLinks()) {
    if (!link.alias?.startsWith("ctnet:") || owned.has(link.alias)) continue;
    log.info({ link: link.name, alias: link.alias }, "removing leftover link");
    await ctx.host.deleteLink(link.name);
  }
}

/** The namespace file lost its mount (e.g. exec-root on a tmpfs that was cleared): bind it again from the live process. */
function rebindNetns(c: ContainerRecord): void {
  closeSync(openSync(c.sandboxPath, "a"));
  const r = spawnSync("mount", ["--bind", `/proc/${c.state.pid}/ns/net`, c.sandboxPath], {
    encoding: "utf8",
  });
  if (r.status !== 0)
    log.error({ container: c.name, err: r.stderr }, "cannot restore the sandbox's namespace mount");
}

function removeLeftoverNetns(ctx: EngineContext): void {
  const used = new Set(
    [...ctx.containers.values()].filter((c) => c.state.status === "running").map((c) => c.sandboxPath),
  );
  for (const file of readdirSync(ctx.netnsDir())) {
    const path = join(ctx.netnsDir(), file);
    if (used.has(path)) continue;
    log.info({ path }, "removing leftover sandbox namespace");
    deleteNetns(path);
  }
}
