/** Small address helpers the engine and drivers need; they throw InvalidParameterError on bad input. */
import { randomBytes } from "node:crypto";
import { InvalidParameterError } from "../errors.js";
import { requireAddress as address, bounds, requireCidr as cidr, type Family } from "./address.js";

/** Docker's MAC for an IPv4 endpoint: 02:42 and the four octets, e.g. 02:42:ac:11:00:02 for 172.17.0.2. */
export function macFromIPv4(ip: string): string {
  const a = address(ip);
  if (a.family !== 4) throw new InvalidParameterError(`invalid IPv4 address: ${ip}`);
  const hex = a.value.toString(16).padStart(8, "0");
  return `02:42:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}:${hex.slice(6, 8)}`;
}

/** A random locally administered unicast MAC, for endpoints without an IPv4 address and for bridges. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = ((b[0] ?? 0) & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

export function prefixLength(subnet: string): number {
  return cidr(subnet).prefix;
}

/** "10.0.0.2" on "10.0.0.0/24" → "10.0.0.2/24", the form the kernel wants for an interface address. */
export function withPrefix(addr: string, subnet: string): string {
  return `${addr}/${prefixLength(subnet)}`;
}

/** The family of an address or CIDR, to pick a network's pool for a static --ip. */
export function addressFamily(text: string): Family {
  return text.includes("/") ? cidr(text).family : address(text).family;
}

export function subnetContains(subnet: string, addr: string): boolean {
  const s = cidr(subnet);
  const a = address(addr);
  const b = bounds(s);
  return a.family === s.family && a.value >= b.start && a.value <= b.end;
}
