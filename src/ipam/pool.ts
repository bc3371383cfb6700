/**
 * One address pool: its validated configuration and the addresses handed out from it. Only the
 * addresses in use are stored (a Set), never the free ones, so a /8 or a /64 costs no more memory
 * than a /30 and allocation stays cheap.
 */
import { ConflictError, ForbiddenError, InvalidParameterError } from "../errors.js";
import {
  bounds,
  type Cidr,
  type Family,
  formatAddress,
  formatCidr,
  masked,
  parseAddress,
  parseCidr,
  requireAddress,
} from "./address.js";

/** A network's address pool as the store keeps it and the API shows it (Docker's IPAM.Config entry). */
export interface Pool {
  family: Family;
  /** canonical network address and prefix, e.g. "10.0.0.0/24", "fd00::/64" */
  subnet: string;
  /** the sub-block dynamic allocation draws from */
  ipRange?: string;
  gateway: string;
  /** addresses kept away from containers, by name (Docker's --aux-address) */
  auxAddresses: Record<string, string>;
}

export interface PoolRequest {
  subnet?: string;
  ipRange?: string;
  gateway?: string;
  auxAddresses?: Record<string, string>;
}

/** Pool exhaustion, as its own class so the engine can try a network's next pool of the family. */
export class NoAvailableAddressError extends ConflictError {
  constructor(
    readonly family: Family,
    readonly subnet: string,
  ) {
    super(`no available IPv${family} addresses on this network's address pools: ${subnet}`);
  }

  /** Docker's wording once every pool of the family on the network is exhausted. */
  static forNetwork(family: Family, name: string, id: string): ConflictError {
    return new ConflictError(
      `no available IPv${family} addresses on this network's address pools: ${name} (${id})`,
    );
  }
}

const familyName = (f: Family) => `IPv${f}`;

/** Docker's `invalid <what> <text>: <reason>`, for request fields. */
function invalid(what: string, text: string, reason: string): InvalidParameterError {
  return new InvalidParameterError(`invalid ${what} ${text}: ${reason}`);
}

export class AddressPool {
  readonly family: Family;
  readonly subnet: Cidr;
  readonly subnetText: string;
  readonly ipRangeText: string | undefined;
  readonly gateway: bigint;
  readonly auxAddresses: Readonly<Record<string, string>>;
  /** first and last address of the subnet */
  readonly start: bigint;
  readonly end: bigint;
  /** the subnet minus its network (and, for IPv4, broadcast) address */
  private readonly lo: bigint;
  private readonly hi: bigint;
  /** where dynamic allocation draws from: the ip-range, clipped to [lo, hi] */
  private readonly rangeStart: bigint;
  private readonly rangeEnd: bigint;
  private readonly rangeCapacity: bigint;
  /** gateway and auxiliary addresses, with what they are, for error messages */
  private readonly reserved = new Map<bigint, string>();
  private readonly allocated = new Set<bigint>();
  private allocatedInRange = 0n;
  /**
   * Next address to try. Allocation is serial (it moves forward and wraps) so that an address just
   * released is not handed to the next container at once, as with Docker: stale ARP/neighbour
   * entries and DNS caches elsewhere would otherwise send the old container's traffic to the new one.
   */
  private cursor: bigint;

  /** Validates a pool configuration; throws InvalidParameterError in Docker's words (ValidateIPAM). */
  constructor(
    family: Family,
    subnet: string,
    ipRange?: string,
    gateway?: string,
    aux: Record<string, string> = {},
  ) {
    const parsed = parseCidr(subnet);
    if (!parsed.ok) throw invalid("subnet", subnet, parsed.reason);
    const s = parsed.value;
    if (s.family !== family) {
      throw invalid(
        "subnet",
        subnet,
        `it is an ${familyName(s.family)} block, ${familyName(family)} expected`,
      );
    }
    const m = masked(s);
    if (m.value !== s.value) throw invalid("subnet", subnet, `it should be ${formatCidr(m)}`);
    this.family = family;
    this.subnet = s;
    this.subnetText = formatCidr(s);
    ({ start: this.start, end: this.end } = bounds(s));

    // RFC 3021 point-to-point /31s and single-address /32s have no network or broadcast address.
    const reserveEdges = s.prefix <= (family === 4 ? 30 : 126);
    this.lo = reserveEdges ? this.start + 1n : this.start;
    this.hi = reserveEdges && family === 4 ? this.end - 1n : this.end;

    let rangeStart = this.lo;
    let rangeEnd = this.hi;
    if (ipRange !== undefined) {
      const r = this.parseIpRange(ipRange);
      this.ipRangeText = formatCidr(r);
      ({ start: rangeStart, end: rangeEnd } = bounds(r));
      if (rangeStart < this.lo) rangeStart = this.lo;
      if (rangeEnd > this.hi) rangeEnd = this.hi;
    }
    this.rangeStart = rangeStart;
    this.rangeEnd = rangeEnd;
    this.cursor = rangeStart;

    this.gateway = gateway === undefined ? this.lo : this.member("gateway", gateway, gateway);
    this.reserved.set(this.gateway, `the gateway of ${this.subnetText}`);
    const auxOut: Record<string, string> = {};
    for (const [name, text] of Object.entries(aux)) {
      const a = this.member("auxiliary address", name, text);
      const holder = this.reserved.get(a);
      if (holder !== undefined) throw invalid("auxiliary address", name, `${text} is already ${holder}`);
      this.reserved.set(a, `auxiliary address "${name}"`);
      auxOut[name] = formatAddress(family, a);
    }
    this.auxAddresses = auxOut;

    let capacity = rangeEnd >= rangeStart ? rangeEnd - rangeStart + 1n : 0n;
    for (const a of this.reserved.keys()) if (this.inRange(a)) capacity--;
    this.rangeCapacity = capacity;
  }

  private parseIpRange(text: string): Cidr {
    const p = parseCidr(text);
    if (!p.ok) throw invalid("ip-range", text, p.reason);
    const r = p.value;
    if (r.family !== this.family)
      throw invalid("ip-range", text, `parent subnet is an ${familyName(this.family)} block`);
    if (r.prefix < this.subnet.prefix) {
      throw invalid("ip-range", text, `CIDR block is bigger than its parent subnet ${this.subnetText}`);
    }
    const m = masked(r);
    if (m.value !== r.value) throw invalid("ip-range", text, `it should be ${formatCidr(m)}`);
    if (!this.contains(r.value)) {
      throw invalid("ip-range", text, `parent subnet ${this.subnetText} doesn't contain ip-range`);
    }
    return r;
  }

  /** A gateway or auxiliary address: in the subnet and usable by a host. */
  private member(what: string, label: string, text: string): bigint {
    const p = parseAddress(text);
    if (!p.ok)
      throw invalid(what, label, p.reason === "invalid address" ? `invalid address ${text}` : p.reason);
    if (p.value.family !== this.family) {
      throw invalid(what, label, `parent subnet is an ${familyName(this.family)} block`);
    }
    const v = p.value.value;
    if (!this.contains(v))
      throw invalid(what, label, `parent subnet ${this.subnetText} doesn't contain this address`);
    const edge = this.edgeName(v);
    if (edge) throw invalid(what, label, `${text} is the ${edge} of ${this.subnetText}`);
    return v;
  }

  private contains(v: bigint): boolean {
    return v >= this.start && v <= this.end;
  }

  private inRange(v: bigint): boolean {
    return v >= this.rangeStart && v <= this.rangeEnd;
  }

  private edgeName(v: bigint): string | undefined {
    if (v < this.lo) return "network address";
    if (v > this.hi) return "broadcast address";
    return undefined;
  }

  toPool(): Pool {
    const pool: Pool = {
      family: this.family,
      subnet: this.subnetText,
      gateway: formatAddress(this.family, this.gateway),
      auxAddresses: { ...this.auxAddresses },
    };
    if (this.ipRangeText !== undefined) pool.ipRange = this.ipRangeText;
    return pool;
  }

  overlaps(other: { start: bigint; end: bigint }): boolean {
    return this.start <= other.end && other.start <= this.end;
  }

  /**
   * A static address (Docker's --ip) may be anywhere in the subnet, also outside the ip-range:
   * keeping fixed addresses outside the dynamic range is the usual way to avoid collisions.
   */
  private checkStatic(text: string): bigint {
    const v = this.parseMember(text);
    const held = this.reserved.get(v);
    if (held !== undefined) throw new ForbiddenError(`Address already in use: ${text} is ${held}`);
    if (this.allocated.has(v)) throw new ForbiddenError(`Address already in use: ${text}`);
    return v;
  }

  private parseMember(text: string): bigint {
    const { family, value: v } = requireAddress(text);
    if (family !== this.family || !this.contains(v)) {
      throw new InvalidParameterError(
        `requested address ${text} is out of range: it does not belong to subnet ${this.subnetText}`,
      );
    }
    const edge = this.edgeName(v);
    if (edge)
      throw new InvalidParameterError(`requested address ${text} is the ${edge} of ${this.subnetText}`);
    return v;
  }

  allocate(preferred?: string): string {
    const v = preferred === undefined ? this.next() : this.checkStatic(preferred);
    this.mark(v);
    return formatAddress(this.family, v);
  }

  /** Start-up: the store says this address is in use. */
  restore(text: string): void {
    this.mark(this.checkStatic(text));
  }

  release(text: string): void {
    const v = this.parseMember(text);
    if (this.allocated.delete(v) && this.inRange(v)) this.allocatedInRange--;
  }

  private mark(v: bigint): void {
    this.allocated.add(v);
    if (this.inRange(v)) this.allocatedInRange++;
  }

  /**
   * Walks from the cursor over addresses in use; the free count checked first guarantees it ends.
   * Each step skips an address in use, so a walk is never longer than the number of addresses in
   * use, and in the usual serial pattern (allocate ahead, release behind) it is a step or two.
   */
  private next(): bigint {
    if (this.allocatedInRange >= this.rangeCapacity)
      throw new NoAvailableAddressError(this.family, this.subnetText);
    let v = this.cursor;
    for (;;) {
      if (v > this.rangeEnd) v = this.rangeStart;
      if (!this.allocated.has(v) && !this.reserved.has(v)) break;
      v++;
    }
    this.cursor = v + 1n;
    return v;
  }
}
