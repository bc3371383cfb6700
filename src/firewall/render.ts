/**
 * The whole of ctnet's nftables ruleset, in one place.
 *
 * The rules are fixed: they only consult named sets, so every change of ctnet's state (a network or
 * an endpoint coming or going) is an element add/delete in those sets, never a rule rewrite, and
 * nothing ever needs a rule handle. ctnet owns the tables `inet ctnet` and `bridge ctnet` and touches
 * no other table. Our base chains have policy accept and only drop what Docker's semantics require:
 * an accept here cannot overrule another table's drop, and we never decide for other tables.
 *
 * Forwarding also needs net.ipv4.ip_forward=1 (and net.ipv6.conf.all.forwarding=1 for IPv6); the
 * engine sets those sysctls, this module only describes packet filtering and NAT.
 *
 * br_netfilter may or may not be active (net.bridge.bridge-nf-call-ip{,6}tables, per namespace).
 * When it is, frames bridged between two ports of one bridge also traverse the inet forward hook
 * with iifname == oifname == the bridge, so the inet forward chain accepts such same-bridge pairs
 * first (set self_pairs). The bridge-family chain runs at priority filter (-200), before
 * br_netfilter hands frames to the inet hooks (priority 0), so icc=false drops happen there in
 * either case.
 *
 * Room for what comes next: published ports (DNAT maps keyed by `meta l4proto . ip daddr . th
 * dport` in nat prerouting/output chains, plus hairpin masquerade of `ct status dnat` traffic that
 * leaves through the bridge it came from) and service VIPs (numgen maps) are further sets/maps
 * declared in the skeleton and further keys of desiredElements; their elements are `key : value`
 * strings, which nft's add and delete element commands both accept, so renderDiff stays as it is.
 */
import { isIPv4, isIPv6 } from "node:net";
import ipaddr from "ipaddr.js";
import { InvalidParameterError } from "../errors.js";
import type { FirewallNetwork, FirewallState } from "./model.js";

export const TABLE = "ctnet";

/** Names a set as nft commands do: "<family> <table> <set>", e.g. "inet ctnet masq4". */
export type SetKey = (typeof SET_KEYS)[number];

export const SET_KEYS = [
  "inet ctnet bridges",
  "inet ctnet internal_bridges",
  "inet ctnet self_pairs",
  "inet ctnet masq4",
  "inet ctnet masq6",
  "bridge ctnet noicc_ports",
] as const;

const INET_TABLE = `table inet ${TABLE} {
  # every ctnet bridge
  set bridges {
    type ifname
  }

  # bridges of internal networks
  set internal_bridges {
    type ifname
  }

  # "br" . "br" for each bridge whose containers may talk to each other (icc on)
  set self_pairs {
    type ifname . ifname
  }

  # source subnets to masquerade when leaving through a non-ctnet interface
  set masq4 {
    type ipv4_addr
    flags interval
  }

  set masq6 {
    type ipv6_addr
    flags interval
  }

  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname . oifname @self_pairs accept
    iifname @internal_bridges drop
    oifname @internal_bridges drop
    iifname @bridges oifname @bridges drop
    oifname @bridges ct state established,related accept
    oifname @bridges ct status dnat accept
    oifname @bridges drop
  }

  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname != @bridges ip saddr @masq4 masquerade
    oifname != @bridges ip6 saddr @masq6 masquerade
  }
}
`;

// Without br_netfilter, frames bridged between two containers never reach the inet hooks; this is
// the only place that sees them. ARP passes (Docker's icc=false behaviour), IPv4 and IPv6 do not.
const BRIDGE_TABLE = `table bridge ${TABLE} {
  # bridge ports (host-side veths) of networks with icc off
  set noicc_ports {
    type ifname
  }

  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname @noicc_ports meta protocol { ip, ip6 } drop
  }
}
`;

// `table X` creates the table if absent, so the delete that follows never fails and the whole
// batch replaces our tables atomically (nft 1.0.6 has no `destroy`).
function replaceTable(family: string, definition: string): string {
  return `table ${family} ${TABLE}\ndelete table ${family} ${TABLE}\n${definition}`;
}

/** The fixed skeleton: both tables with their empty sets and rules, replacing any previous copy. */
export function renderRuleset(): string {
  return replaceTable("inet", INET_TABLE) + replaceTable("bridge", BRIDGE_TABLE);
}

/** Deletes our tables, whether or not they exist. */
export function renderTeardown(): string {
  return ["inet", "bridge"].map((f) => `table ${f} ${TABLE}\ndelete table ${f} ${TABLE}\n`).join("");
}

// Linux accepts almost any byte in an interface name; nft strings have no escapes and treat a
// trailing `*` as a wildcard, so only plain names are let through.
const IFNAME = /^[A-Za-z0-9_.@+=-]{1,15}$/;

function ifname(name: string): string {
  if (!IFNAME.test(name) || name === "." || name === "..") {
    throw new InvalidParameterError(`firewall: unsupported interface name ${JSON.stringify(name)}`);
  }
  return `"${name}"`;
}

interface Subnet {
  text: string;
  bytes: number[];
  prefix: number;
}

// Parsing dominates desiredElements (~3 µs a subnet, 6 ms an update at 1000 dual-stack networks)
// while the same few strings come back on every update; the cap bounds a long-lived daemon.
const parsed = new Map<string, Subnet>();

function subnet(cidr: string, family: 4 | 6): Subnet {
  const key = `${family} ${cidr}`;
  let s = parsed.get(key);
  if (s === undefined) {
    if (parsed.size >= 4096) parsed.clear();
    s = parseSubnet(cidr, family);
    parsed.set(key, s);
  }
  return s;
}

function parseSubnet(cidr: string, family: 4 | 6): Subnet {
  const [address = "", prefixText = "", ...rest] = cidr.split("/");
  const prefix = Number(prefixText);
  const valid =
    rest.length === 0 &&
    /^\d{1,3}$/.test(prefixText) &&
    prefix <= (family === 4 ? 32 : 128) &&
    (family === 4 ? isIPv4(address) : isIPv6(address) && !address.includes("%"));
  if (!valid)
    throw new InvalidParameterError(`firewall: invalid IPv${family} subnet ${JSON.stringify(cidr)}`);
  const network =
    family === 4 ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr);
  return { text: `${network.toString()}/${prefix}`, bytes: network.toByteArray(), prefix };
}

function compareSubnets(a: Subnet, b: Subnet): number {
  for (let i = 0; i < a.bytes.length; i++) {
    const d = (a.bytes[i] ?? 0) - (b.bytes[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.prefix - b.prefix;
}

function contains(outer: Subnet, inner: Subnet): boolean {
  if (inner.prefix < outer.prefix) return false;
  for (let bit = 0; bit < outer.prefix; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if (((outer.bytes[byte] ?? 0) & mask) !== ((inner.bytes[byte] ?? 0) & mask)) return false;
  }
  return true;
}

// Interval sets reject overlapping elements, so nested subnets (possible with user-chosen ones)
// collapse to the outermost. CIDR blocks are either disjoint or nested; sorted by address, then
// shorter prefix first, a block is covered iff the last kept block covers it.
function outermost(cidrs: string[], family: 4 | 6): string[] {
  const sorted = cidrs.map((c) => subnet(c, family)).sort(compareSubnets);
  const kept: Subnet[] = [];
  for (const s of sorted) {
    const last = kept.at(-1);
    if (!last || !contains(last, s)) kept.push(s);
  }
  return kept.map((s) => s.text);
}

function sorted(elements: Iterable<string>): string[] {
  return [...new Set(elements)].sort();
}

/** The elements each of our sets must hold for this state, sorted, every key present. */
export function desiredElements(state: FirewallState): Record<SetKey, string[]> {
  const nets: FirewallNetwork[] = state.networks;
  const masqueraded = nets.filter((n) => n.masquerade && !n.internal);
  return {
    "inet ctnet bridges": sorted(nets.map((n) => ifname(n.bridge))),
    "inet ctnet internal_bridges": sorted(nets.filter((n) => n.internal).map((n) => ifname(n.bridge))),
    "inet ctnet self_pairs": sorted(
      nets.filter((n) => n.icc).map((n) => `${ifname(n.bridge)} . ${ifname(n.bridge)}`),
    ),
    "inet ctnet masq4": outermost(
      masqueraded.flatMap((n) => n.subnets4),
      4,
    ),
    "inet ctnet masq6": outermost(
      masqueraded.flatMap((n) => n.subnets6),
      6,
    ),
    "bridge ctnet noicc_ports": sorted(
      nets.filter((n) => !n.icc).flatMap((n) => (n.ports ?? []).map(ifname)),
    ),
  };
}

function elementCommands(verb: "add" | "delete", key: SetKey, elements: string[]): string {
  return elements.length === 0 ? "" : `${verb} element ${key} { ${elements.join(", ")} }\n`;
}

/** Start-up: the skeleton and every element, in one batch. */
export function renderFull(state: FirewallState): string {
  return renderElementsFull(desiredElements(state));
}

export function renderElementsFull(elements: Record<SetKey, string[]>): string {
  return renderRuleset() + SET_KEYS.map((k) => elementCommands("add", k, elements[k])).join("");
}

/** Only the element changes from prev to next; "" when there are none. */
export function renderDiff(prev: FirewallState, next: FirewallState): string {
  return renderElementsDiff(desiredElements(prev), desiredElements(next));
}

/**
 * Deletes come first so an interval moving between two elements (a subnet now covered by a wider
 * one) never overlaps inside the batch.
 */
export function renderElementsDiff(had: Record<SetKey, string[]>, want: Record<SetKey, string[]>): string {
  const changes = (verb: "add" | "delete", from: Record<SetKey, string[]>, to: Record<SetKey, string[]>) =>
    SET_KEYS.map((k) => {
      const present = new Set(from[k]);
      return elementCommands(
        verb,
        k,
        to[k].filter((e) => !present.has(e)),
      );
    });
  return [...changes("delete", want, had), ...changes("add", had, want)].join("");
}
