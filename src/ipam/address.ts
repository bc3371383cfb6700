/**
 * Address text ⇄ number. Addresses are BigInts so that IPv4 and IPv6 share one code path and a /64
 * needs no special casing; ipaddr.js does the parsing, and this module adds the strictness Docker
 * (Go's net/netip) has: dotted-quad IPv4 only, no zone indices, no IPv4-mapped IPv6.
 */
import ipaddr from "ipaddr.js";
import { InvalidParameterError } from "../errors.js";

export type Family = 4 | 6;

export const BITS: Record<Family, number> = { 4: 32, 6: 128 };

export interface Address {
  family: Family;
  value: bigint;
}

export interface Cidr extends Address {
  prefix: number;
}

/** A parse result: the value, or why the text is not one (worded to follow "invalid X Y: "). */
export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

const fail = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

export function parseAddress(text: string): Parsed<Address> {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) {
    const [a, b, c, d] = ipaddr.IPv4.parse(text).octets as [number, number, number, number];
    return { ok: true, value: { family: 4, value: BigInt(((a << 24) | (b << 16) | (c << 8) | d) >>> 0) } };
  }
  if (!ipaddr.IPv6.isValid(text)) return fail("invalid address");
  const v6 = ipaddr.IPv6.parse(text);
  if (v6.zoneId !== undefined) return fail("zone indices are not allowed in a network address");
  if (v6.isIPv4MappedAddress()) {
    return fail(`IPv4-mapped IPv6 addresses are not supported, use ${v6.toIPv4Address().toString()}`);
  }
  let value = 0n;
  for (const part of v6.parts) value = (value << 16n) | BigInt(part);
  return { ok: true, value: { family: 6, value } };
}

/** Parses "address/prefix" without masking, so callers can tell "10.0.0.5/24" from "10.0.0.0/24". */
export function parseCidr(text: string): Parsed<Cidr> {
  const slash = text.indexOf("/");
  const prefixText = text.slice(slash + 1);
  if (slash < 0 || !/^(0|[1-9]\d{0,2})$/.test(prefixText)) return fail("invalid CIDR block notation");
  const addrText = text.slice(0, slash);
  const prefix = Number(prefixText);
  const addr = parseAddress(addrText);
  if (!addr.ok) {
    if (addr.reason === "invalid address") return fail("invalid CIDR block notation");
    if (addr.reason.startsWith("IPv4-mapped") && prefix >= 96 && prefix <= 128) {
      const v4 = ipaddr.IPv6.parse(addrText).toIPv4Address().toString();
      return fail(`IPv4-mapped IPv6 subnets are not supported, use ${v4}/${prefix - 96}`);
    }
    return addr;
  }
  if (prefix > BITS[addr.value.family]) return fail("invalid CIDR block notation");
  return { ok: true, value: { ...addr.value, prefix } };
}

/** parseAddress for an address standing alone (--ip, a helper's argument). */
export function requireAddress(text: string): Address {
  const p = parseAddress(text);
  if (p.ok) return p.value;
  throw new InvalidParameterError(
    p.reason === "invalid address"
      ? `invalid IP address: ${text}`
      : `invalid IP address ${text}: ${p.reason}`,
  );
}

export function requireCidr(text: string): Cidr {
  const p = parseCidr(text);
  if (p.ok) return p.value;
  throw new InvalidParameterError(`invalid CIDR address ${text}: ${p.reason}`);
}

export function hostBits(c: { family: Family; prefix: number }): bigint {
  return BigInt(BITS[c.family] - c.prefix);
}

/** The number of addresses in the block. */
export function blockSize(c: { family: Family; prefix: number }): bigint {
  return 1n << hostBits(c);
}

export function masked(c: Cidr): Cidr {
  const h = hostBits(c);
  return { ...c, value: (c.value >> h) << h };
}

export function formatAddress(family: Family, value: bigint): string {
  if (family === 4) {
    const n = Number(value);
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  }
  const parts: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) parts.push(Number((value >> shift) & 0xffffn));
  // ipaddr.js prints the RFC 5952 form: lower case, longest zero run compressed.
  return new ipaddr.IPv6(parts).toString();
}

export function formatCidr(c: Cidr): string {
  return `${formatAddress(c.family, c.value)}/${c.prefix}`;
}

/** Inclusive bounds of a block, for overlap and containment tests. */
export function bounds(c: Cidr): { start: bigint; end: bigint } {
  const start = masked(c).value;
  return { start, end: start + blockSize(c) - 1n };
}
