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
 * Published ports are four maps (per family, "any local address" and "this address") from
 * `proto . [daddr .] dport` to `container address . port`, consulted by nat chains on prerouting
 * (traffic arriving from outside or from containers) and output (connections from the host itself,
 * to 127.0.0.1 or to its own addresses). Publishing a port is one map element add. Map elements are
 * `key : value` strings, which nft's add and delete element commands both accept, so renderDiff
 * treats maps as sets. Around the DNAT:
 * - traffic from outside keeps its source address (nothing masquerades it);
 * - the host's own 127.0.0.1 connections are masqueraded as they leave through a bridge, because a
 *   container would answer 127.0.0.1 to itself; the kernel only routes 127/8 sources off loopback
 *   with net.ipv4.conf.<bridge>.route_localnet=1, which the engine sets per bridge. IPv6 has no
 *   such switch, so [::1] is not forwarded (the allocator's socket resets those connections);
 * - DNATed traffic from a container back out a bridge (a container reaching a published port
 *   through the host's address, its own or another network's) is masqueraded, so that replies come
 *   back through the host and are un-NATed. It is recognised by its source subnet, not by
 *   `iifname @bridges`: when br_netfilter bridges a DNATed frame back into the bridge it came
 *   from, the postrouting hook runs with no input interface;
 * - DNATed traffic may cross from one ctnet bridge to another, as Docker's userland proxy lets it:
 *   publishing a port means anyone who reaches the host may use it. Internal networks stay closed:
 *   their ports are never forwarded, and their bridges drop all routed traffic before that accept.
 */
import { isIPv4, isIPv6 } from "node:net";
import ipaddr from "ipaddr.js";
import { InvalidParameterError } from "../errors.js";
import type { FirewallNetwork, FirewallPort, FirewallState } from "./model.js";

export const TABLE = "ctnet";

/** Names a set as nft commands do: "<family> <table> <set>", e.g. "inet ctnet masq4". */
export type SetKey = (typeof SET_KEYS)[number];

export const SET_KEYS = [
  "inet ctnet bridges",
  "inet ctnet internal_bridges",
  "inet ctnet self_pairs",
  "inet ctnet masq4",
  "inet ctnet masq6",
  "inet ctnet subnets4",
  "inet ctnet subnets6",
  "inet ctnet pub4_any",
  "inet ctnet pub4_ip",
  "inet ctnet pub6_any",
  "inet ctnet pub6_ip",
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

  # every ctnet network's subnets: the sources of hairpin traffic to published ports
  set subnets4 {
    type ipv4_addr
    flags interval
  }

  set subnets6 {
    type ipv6_addr
    flags interval
  }

  # published ports on every local address: proto . host port : container address . port
  map pub4_any {
    type inet_proto . inet_service : ipv4_addr . inet_service
  }

  # published ports on one host address: proto . host address . host port : container address . port
  map pub4_ip {
    type inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service
  }

  map pub6_any {
    type inet_proto . inet_service : ipv6_addr . inet_service
  }

  map pub6_ip {
    type inet_proto . ipv6_addr . inet_service : ipv6_addr . inet_service
  }

  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname . oifname @self_pairs accept
    iifname @internal_bridges drop
    oifname @internal_bridges drop
    iifname @bridges oifname @bridges ct status dnat accept
    iifname @bridges oifname @bridges drop
    oifname @bridges ct state established,related accept
    oifname @bridges ct status dnat accept
    oifname @bridges drop
  }

  # a lookup that finds no element ends the rule, so order only matters between overlapping
  # keys: a port on one address wins over the same port on every address (the allocator never
  # gives out both, but a hand-made state could)
  chain published {
    dnat ip to meta l4proto . ip daddr . th dport map @pub4_ip
    dnat ip to meta l4proto . th dport map @pub4_any
    ip6 daddr ::1 return
    dnat ip6 to meta l4proto . ip6 daddr . th dport map @pub6_ip
    dnat ip6 to meta l4proto . th dport map @pub6_any
  }

  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump published
  }

  # nft 1.0.6 knows the name dstnat only on prerouting; -100 is its value
  chain output {
    type nat hook output priority -100; policy accept;
    fib daddr type local jump published
  }

  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname != @bridges ip saddr @masq4 masquerade
    oifname != @bridges ip6 saddr @masq6 masquerade
    oifname @bridges ip saddr 127.0.0.0/8 masquerade
    oifname @bridges ct status dnat ip saddr @subnets4 masquerade
    oifname @bridges ct status dnat ip6 saddr @subnets6 masquerade
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

const canonical6 = new Map<string, string>();

// Node's isIPv4 only accepts plain dotted quads, already canonical; IPv6 text has many spellings
// and ipaddr.js costs ~1 µs each, which adds up with thousands of published ports.
function canonicalIp(ip: string): string {
  if (isIPv4(ip)) return ip;
  let c = canonical6.get(ip);
  if (c === undefined) {
    if (canonical6.size >= 4096) canonical6.clear();
    c = ipaddr.parse(ip).toString();
    canonical6.set(ip, c);
  }
  return c;
}

function portNumber(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new InvalidParameterError(`firewall: invalid ${what} ${JSON.stringify(n)}`);
  }
  return n;
}

type PortMaps = Pick<
  Record<SetKey, string[]>,
  "inet ctnet pub4_any" | "inet ctnet pub4_ip" | "inet ctnet pub6_any" | "inet ctnet pub6_ip"
>;

/**
 * Map elements of the published ports. One key with two values would make nft refuse the whole
 * batch, so it is refused here, naming the port.
 */
function portElements(ports: FirewallPort[], nets: FirewallNetwork[]): PortMaps {
  const internal = new Map(nets.map((n) => [n.bridge, n.internal]));
  const out: Record<keyof PortMaps, Map<string, PortElement>> = {
    "inet ctnet pub4_any": new Map(),
    "inet ctnet pub4_ip": new Map(),
    "inet ctnet pub6_any": new Map(),
    "inet ctnet pub6_ip": new Map(),
  };
  for (const p of ports) {
    const isInternal = internal.get(p.bridge);
    if (isInternal === undefined) {
      throw new InvalidParameterError(
        `firewall: ${p.proto} port ${p.hostPort} is published on unknown bridge ${ifname(p.bridge)}`,
      );
    }
    if (isInternal) continue;
    const e = portElement(p);
    const map = out[e.map];
    const had = map.get(e.key);
    if (had !== undefined && had.target !== e.target) {
      throw new InvalidParameterError(
        `firewall: ${p.proto} port ${p.hostPort} on ${p.hostIp || "every address"} is published twice`,
      );
    }
    map.set(e.key, e);
  }
  const elements = (m: Map<string, PortElement>) => Array.from(m.values(), (e) => e.element).sort();
  return {
    "inet ctnet pub4_any": elements(out["inet ctnet pub4_any"]),
    "inet ctnet pub4_ip": elements(out["inet ctnet pub4_ip"]),
    "inet ctnet pub6_any": elements(out["inet ctnet pub6_any"]),
    "inet ctnet pub6_ip": elements(out["inet ctnet pub6_ip"]),
  };
}

interface PortElement {
  map: keyof PortMaps;
  key: string;
  target: string;
  /** "key : target", as the map element is written */
  element: string;
}

/**
 * Checked and rendered once per port object: the engine hands the same objects again while a
 * container's ports do not change, so publishing one more port does not re-check all the others.
 */
const renderedPorts = new WeakMap<FirewallPort, PortElement>();

function portElement(p: FirewallPort): PortElement {
  let e = renderedPorts.get(p);
  if (e === undefined) {
    e = renderPort(p);
    renderedPorts.set(p, e);
  }
  return e;
}

function renderPort(p: FirewallPort): PortElement {
  const where = `${p.proto} port ${p.hostPort}`;
  if (p.proto !== "tcp" && p.proto !== "udp") {
    throw new InvalidParameterError(`firewall: invalid protocol ${JSON.stringify(p.proto)}`);
  }
  const family = isIPv4(p.containerIp) ? 4 : isIPv6(p.containerIp) && !p.containerIp.includes("%") ? 6 : 0;
  if (family === 0) {
    throw new InvalidParameterError(`firewall: invalid container address ${JSON.stringify(p.containerIp)}`);
  }
  const any = p.hostIp === "" || p.hostIp === (family === 4 ? "0.0.0.0" : "::");
  if (!any && !(family === 4 ? isIPv4(p.hostIp) : isIPv6(p.hostIp) && !p.hostIp.includes("%"))) {
    throw new InvalidParameterError(
      `firewall: host address ${JSON.stringify(p.hostIp)} of ${where} is not an IPv${family} address like its container's`,
    );
  }
  const hostPort = portNumber(p.hostPort, "host port");
  const target = `${canonicalIp(p.containerIp)} . ${portNumber(p.containerPort, "container port")}`;
  const key = any ? `${p.proto} . ${hostPort}` : `${p.proto} . ${canonicalIp(p.hostIp)} . ${hostPort}`;
  return { map: `inet ctnet pub${family}_${any ? "any" : "ip"}`, key, target, element: `${key} : ${target}` };
}

/** The elements each of our sets and maps must hold for this state, sorted, every key present. */
export function desiredElements(state: FirewallState): Record<SetKey, string[]> {
  const nets: FirewallNetwork[] = state.networks;
  const masqueraded = nets.filter((n) => n.masquerade && !n.internal);
  return {
    ...portElements(state.ports ?? [], nets),
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
    "inet ctnet subnets4": outermost(
      nets.flatMap((n) => n.subnets4),
      4,
    ),
    "inet ctnet subnets6": outermost(
      nets.flatMap((n) => n.subnets6),
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
