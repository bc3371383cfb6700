/**
 * What the embedded resolver needs to know about names, and the pure helpers around it. The view
 * is asked at query time (no copy of the records lives here), so the engine stays the one owner of
 * names and answers follow connects, disconnects and renames at once.
 */
import { isIP } from "node:net";

export interface ResolverView {
  /**
   * Addresses of `name` (lowercase, no trailing dot) as seen from `sandboxId`; [] when the name
   * is known but has no address of that family; undefined when it is not a container name, so
   * the query is forwarded.
   */
  lookup(sandboxId: string, name: string, family: 4 | 6): string[] | undefined;
  /**
   * The name for `address` (IPv4 dotted quad, or IPv6 in RFC 5952 form) on a network the sandbox
   * shares, without trailing dot; Docker answers `<container>.<network>`. undefined → forward.
   */
  reverse(sandboxId: string, address: string): string | undefined;
  /** Upstream servers for this sandbox ("ip", "ip:port", "[ipv6]:port"), in order of preference. */
  upstreams(sandboxId: string): string[];
}

/** Docker's TTL for the records it answers itself. */
export const TTL = 600;

const V4_SUFFIX = ".in-addr.arpa";
const V6_SUFFIX = ".ip6.arpa";
const DECIMAL_OCTET = /^(?:0|[1-9]\d{0,2})$/;

/**
 * The address a full reverse name stands for: "4.3.2.1.in-addr.arpa" → "1.2.3.4", 32 nibbles
 * under ip6.arpa → RFC 5952 text. Partial (classless or zone) names give undefined: they are not
 * a container's address and go upstream.
 */
export function addressOfReverseName(name: string): string | undefined {
  if (name.endsWith(V4_SUFFIX)) {
    const labels = name.slice(0, -V4_SUFFIX.length).split(".");
    if (labels.length !== 4) return undefined;
    for (const l of labels) if (!DECIMAL_OCTET.test(l) || Number(l) > 255) return undefined;
    return `${labels[3]}.${labels[2]}.${labels[1]}.${labels[0]}`;
  }
  if (name.endsWith(V6_SUFFIX)) {
    const labels = name.slice(0, -V6_SUFFIX.length).split(".");
    if (labels.length !== 32) return undefined;
    const groups: number[] = [];
    for (let g = 0; g < 8; g++) {
      let value = 0;
      for (let n = 0; n < 4; n++) {
        const label = labels[31 - g * 4 - n] as string;
        const digit = label.length === 1 ? Number.parseInt(label, 16) : Number.NaN;
        if (Number.isNaN(digit)) return undefined;
        value = value * 16 + digit;
      }
      groups.push(value);
    }
    return formatIPv6(groups);
  }
  return undefined;
}

/** RFC 5952: lowercase, no leading zeros, the longest run (≥ 2) of zero groups as "::". */
function formatIPv6(groups: number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

export interface Upstream {
  host: string;
  port: number;
  family: 4 | 6;
}

/** "1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:5353" → its parts; anything else → undefined. */
export function parseUpstream(text: string): Upstream | undefined {
  let host = text;
  let port = 53;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) return undefined;
    host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return undefined;
      port = Number(rest.slice(1));
    }
  } else if (!text.includes(":", text.indexOf(":") + 1)) {
    // One colon at most: IPv4 with an optional port. Two or more: a bare IPv6 address.
    const colon = text.indexOf(":");
    if (colon >= 0) {
      host = text.slice(0, colon);
      port = Number(text.slice(colon + 1));
    }
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  // Zone ids (fe80::1%eth0) would name an interface of the daemon's namespace: not supported.
  const family = host.includes("%") ? 0 : isIP(host);
  return family === 4 || family === 6 ? { host, port, family } : undefined;
}
