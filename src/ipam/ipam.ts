import { parseCidr as parseHostRoute } from "cidr-tools";
import { ForbiddenError, InvalidParameterError, NotFoundError } from "../errors.js";
import { BITS, bounds, type Cidr, type Family, formatCidr, masked, parseCidr } from "./address.js";
import { AddressPool, type Pool, type PoolRequest } from "./pool.js";

/** A block that default pools are cut from: `base` split into blocks of prefix length `size`. */
export interface DefaultPool {
  base: string;
  size: number;
}

export interface IpamOptions {
  /** Docker's: 172.17.0.0/16 … 172.31.0.0/16 as /16s, then 192.168.0.0/16 as /20s */
  defaultPools4: DefaultPool[];
  /** e.g. a ULA /48 split into /64s */
  defaultPool6: DefaultPool;
  /**
   * Blocks a default pool is never taken from, though an explicit subnet may use them: this is
   * how the default bridge keeps 172.17.0.0/16 even while it does not exist yet.
   */
  reserved?: string[];
}

interface Block {
  start: bigint;
  end: bigint;
}

interface DefaultBlock extends Block {
  size: number;
}

/**
 * Address pools and addresses of one address space. Overlays (global scope) take a second
 * instance with their own default pools, since Docker lets local and global pools overlap.
 *
 * Every method is synchronous on purpose: Node runs one of them at a time, so two requests can
 * never be handed the same address or pool. Keep it that way; an `await` inside would break it.
 */
export class Ipam {
  private readonly defaults: Record<Family, DefaultBlock[]>;
  private readonly reserved: Cidr[];
  /** networkId → canonical subnet → pool */
  private readonly networks = new Map<string, Map<string, AddressPool>>();

  constructor(o: IpamOptions) {
    const blocks = [...o.defaultPools4.map((d) => defaultBlock(4, d)), defaultBlock(6, o.defaultPool6)];
    this.defaults = { 4: [], 6: [] };
    for (const { family, block } of blocks) this.defaults[family].push(block);
    this.reserved = (o.reserved ?? []).map((text) => {
      const p = parseCidr(text);
      if (!p.ok) throw new InvalidParameterError(`invalid reserved address pool ${text}: ${p.reason}`);
      return p.value;
    });
  }

  /**
   * Validates an explicit pool, or picks the first default block that overlaps no pool, reserved
   * block or host route. Overlap with another registered pool is Docker's 403.
   *
   * `hostRoutes` are the CIDRs of the host's routes (default routes are ignored). Only a default
   * pool avoids them; an explicit subnet may overlap one, as in Docker. They are an argument, not a
   * callback, because reading routes is asynchronous and this method must not be.
   */
  requestPool(networkId: string, family: Family, req: PoolRequest, hostRoutes: string[] = []): Pool {
    let pool: AddressPool;
    if (req.subnet === undefined) {
      if (
        req.ipRange !== undefined ||
        req.gateway !== undefined ||
        Object.keys(req.auxAddresses ?? {}).length > 0
      ) {
        throw new InvalidParameterError(
          "invalid pool request: an ip-range, gateway or auxiliary address needs an explicit subnet",
        );
      }
      pool = new AddressPool(family, formatCidr(this.pickDefault(family, hostRoutes)));
    } else {
      pool = new AddressPool(family, req.subnet, req.ipRange, req.gateway, req.auxAddresses);
      this.checkOverlap(pool);
    }
    this.register(networkId, pool);
    return pool.toPool();
  }

  /** Idempotent, so that rollback and removal paths need not track what was requested. */
  releasePool(networkId: string, subnet: string): void {
    const pools = this.networks.get(networkId);
    if (!pools) return;
    pools.delete(canonical(subnet));
    if (pools.size === 0) this.networks.delete(networkId);
  }

  /**
   * Start-up: re-registers a pool from the store. Host routes are not consulted, because the
   * route of the network's own bridge is among them.
   */
  restorePool(networkId: string, pool: Pool): void {
    const p = new AddressPool(pool.family, pool.subnet, pool.ipRange, pool.gateway, pool.auxAddresses);
    this.checkOverlap(p);
    this.register(networkId, p);
  }

  /**
   * Returns an address without prefix. `preferred` is a static address (--ip); without it the next
   * free address of the ip-range (or subnet) after the last one handed out.
   */
  requestAddress(networkId: string, subnet: string, preferred?: string): string {
    return this.pool(networkId, subnet).allocate(preferred);
  }

  /** Idempotent, like releasePool. */
  releaseAddress(networkId: string, subnet: string, address: string): void {
    this.find(networkId, subnet)?.release(address);
  }

  /** Start-up: marks an address the store records as in use. */
  restoreAddress(networkId: string, subnet: string, address: string): void {
    this.pool(networkId, subnet).restore(address);
  }

  private register(networkId: string, pool: AddressPool): void {
    let pools = this.networks.get(networkId);
    if (!pools) {
      pools = new Map();
      this.networks.set(networkId, pools);
    }
    pools.set(pool.subnetText, pool);
  }

  private find(networkId: string, subnet: string): AddressPool | undefined {
    const pools = this.networks.get(networkId);
    return pools?.get(subnet) ?? pools?.get(canonical(subnet));
  }

  private pool(networkId: string, subnet: string): AddressPool {
    const p = this.find(networkId, subnet);
    if (!p) throw new NotFoundError(`network ${networkId} has no address pool ${subnet}`);
    return p;
  }

  private *registered(): Generator<AddressPool> {
    for (const pools of this.networks.values()) yield* pools.values();
  }

  private checkOverlap(pool: AddressPool): void {
    for (const other of this.registered()) {
      if (other.family === pool.family && pool.overlaps(other)) {
        throw new ForbiddenError("invalid pool request: Pool overlaps with other one on this address space");
      }
    }
  }

  private pickDefault(family: Family, hostRoutes: string[]): Cidr {
    const taken: Block[] = [];
    for (const p of this.registered()) if (p.family === family) taken.push(p);
    for (const r of this.reserved) if (r.family === family) taken.push(bounds(r));
    for (const route of hostRoutes) {
      const r = parseHostRoute(route);
      // A default route covers everything; Docker ignores it too.
      if (r.version === family && r.prefix !== "0") taken.push(r);
    }
    for (const d of this.defaults[family]) {
      const step = 1n << BigInt(BITS[family] - d.size);
      let at = d.start;
      while (at + step - 1n <= d.end) {
        const last = at + step - 1n;
        const hit = taken.find((t) => t.start <= last && at <= t.end);
        if (!hit) return { family, value: at, prefix: d.size };
        // Jump past the conflicting block in one go, so a /48 of /64s is not walked one by one.
        at = ((hit.end + step) / step) * step;
      }
    }
    throw new InvalidParameterError("all predefined address pools have been fully subnetted");
  }
}

function defaultBlock(family: Family, d: DefaultPool): { family: Family; block: DefaultBlock } {
  const p = parseCidr(d.base);
  const bad = (reason: string) =>
    new InvalidParameterError(`invalid default address pool ${d.base}: ${reason}`);
  if (!p.ok) throw bad(p.reason);
  if (p.value.family !== family) throw bad(`an IPv${family} block is expected here`);
  if (masked(p.value).value !== p.value.value) throw bad(`it should be ${formatCidr(masked(p.value))}`);
  if (!Number.isInteger(d.size) || d.size < p.value.prefix || d.size > BITS[family]) {
    throw bad(`size ${d.size} must be between ${p.value.prefix} and ${BITS[family]}`);
  }
  return { family, block: { ...bounds(p.value), size: d.size } };
}

/** Lookup key for a subnet as the caller wrote it; pools are keyed by canonical text. */
function canonical(subnet: string): string {
  const p = parseCidr(subnet);
  return p.ok ? formatCidr(p.value) : subnet;
}
