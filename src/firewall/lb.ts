/**
 * Service load balancing without IPVS (this kernel lacks it): one nftables table, `ip ctnet_lb`,
 * inside a sandbox's own network namespace, in the way kube-proxy's nftables mode works.
 *
 * The rules are fixed and only consult a set and a map, so a task coming or going is an element
 * add/delete, never a rule rewrite. Each new connection draws a bucket with `numgen random mod
 * BUCKETS` into the packet mark (numgen cannot stand inside a concatenation on nft 1.0.6), and the
 * map, keyed by `destination . bucket range`, says where it goes. The map has the interval flag: a
 * backend owns a contiguous range of buckets, so a service costs one element per task, not one per
 * bucket, and adding the 1000th service to a sandbox costs what adding the 1st did.
 *
 * Two kinds of table:
 * - client (every sandbox on a network with vip-mode services), nat output: connections the
 *   sandbox's processes open to a VIP go to a running task's address on that network, keeping the
 *   port (Docker's VIP forwards every port and protocol, as its fwmark-based IPVS service does).
 *   A VIP with no running task rejects: TCP connections are refused at once, not left to time out.
 * - ingress (the routing mesh's sandbox), nat prerouting: connections to a published port go to a
 *   task's address on the ingress network and the service's target port, masqueraded so that the
 *   task answers through this sandbox. A port with no running task is not translated and reaches
 *   the sandbox itself, where nothing listens: TCP is refused there too.
 *
 * The packet mark of a connection's first packet is overwritten; nothing else in a sandbox uses it.
 */
import { isIPv4 } from "node:net";
import { InvalidParameterError } from "../errors.js";

export const LB_TABLE = "ctnet_lb";
/** Buckets a connection is drawn into; a service spreads over at most this many tasks. */
export const BUCKETS = 1024;

export type LbKind = "client" | "ingress";

/** A service's virtual IP on one network and the addresses of its running tasks there. */
export interface LbVip {
  vip: string;
  backends: string[];
}

/** A port of the routing mesh and the running tasks' addresses on the ingress network. */
export interface LbMeshPort {
  proto: "tcp" | "udp";
  port: number;
  target: number;
  backends: string[];
}

/** The elements of the table's sets and maps, each list sorted. */
export interface LbElements {
  vips: string[];
  backends: string[];
  meshPorts: string[];
  mesh: string[];
}

const SETS: { key: keyof LbElements; name: string }[] = [
  { key: "vips", name: "vips" },
  { key: "backends", name: "backends" },
  { key: "meshPorts", name: "mesh_ports" },
  { key: "mesh", name: "mesh" },
];

const CLIENT = `table ip ${LB_TABLE} {
  # virtual IPs of vip-mode services on this sandbox's networks
  set vips {
    type ipv4_addr
  }

  # VIP . bucket range : task address
  map backends {
    type ipv4_addr . mark : ipv4_addr
    flags interval
  }

  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr @vips meta mark set numgen random mod ${BUCKETS} dnat ip to ip daddr . meta mark map @backends
    ip daddr @vips reject
  }
}
`;

const INGRESS = `table ip ${LB_TABLE} {
  # proto . port of every port published through the routing mesh
  set mesh_ports {
    type inet_proto . inet_service
  }

  # proto . port . bucket range : task address on the ingress network . target port
  map mesh {
    type inet_proto . inet_service . mark : ipv4_addr . inet_service
    flags interval
  }

  # nft wants a transport protocol match before it maps to a port
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    meta l4proto { tcp, udp } meta l4proto . th dport @mesh_ports meta mark set numgen random mod ${BUCKETS} dnat ip to meta l4proto . th dport . meta mark map @mesh
  }

  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat masquerade
  }
}
`;

export const EMPTY: LbElements = Object.freeze({ vips: [], backends: [], meshPorts: [], mesh: [] });

/**
 * Contiguous bucket ranges over the backends, as "from-to" texts in the backends' sorted order, so
 * that every host computes the same spread. Ranges differ in size by at most one bucket; past
 * BUCKETS backends the surplus get none.
 */
export function spread(backends: string[], buckets = BUCKETS): { range: string; backend: string }[] {
  const sorted = [...new Set(backends)].sort();
  const out: { range: string; backend: string }[] = [];
  sorted.forEach((backend, i) => {
    const from = Math.floor((i * buckets) / sorted.length);
    const to = Math.floor(((i + 1) * buckets) / sorted.length) - 1;
    if (to >= from) out.push({ range: `${from}-${to}`, backend });
  });
  return out;
}

function ipv4(address: string, what: string): string {
  if (!isIPv4(address))
    throw new InvalidParameterError(`load balancer: invalid ${what} ${JSON.stringify(address)}`);
  return address;
}

function port(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new InvalidParameterError(`load balancer: invalid ${what} ${JSON.stringify(n)}`);
  return n;
}

/** A client table's elements: every VIP, and its buckets over its backends (none: it rejects). */
export function clientElements(vips: LbVip[]): LbElements {
  const set = new Set<string>();
  const map: string[] = [];
  for (const v of vips) {
    const vip = ipv4(v.vip, "virtual IP");
    set.add(vip);
    for (const { range, backend } of spread(v.backends.map((b) => ipv4(b, "task address"))))
      map.push(`${vip} . ${range} : ${backend}`);
  }
  return { ...EMPTY, vips: [...set].sort(), backends: map.sort() };
}

/** The ingress table's elements: every published port, and its buckets over its backends. */
export function ingressElements(ports: LbMeshPort[]): LbElements {
  const set = new Set<string>();
  const map: string[] = [];
  for (const p of ports) {
    if (p.proto !== "tcp" && p.proto !== "udp")
      throw new InvalidParameterError(`load balancer: invalid protocol ${JSON.stringify(p.proto)}`);
    const key = `${p.proto} . ${port(p.port, "published port")}`;
    const target = port(p.target, "target port");
    set.add(key);
    for (const { range, backend } of spread(p.backends.map((b) => ipv4(b, "task address"))))
      map.push(`${key} . ${range} : ${backend} . ${target}`);
  }
  return { ...EMPTY, meshPorts: [...set].sort(), mesh: map.sort() };
}

function commands(verb: "add" | "delete", elements: LbElements): string {
  return SETS.map(({ key, name }) =>
    elements[key].length === 0
      ? ""
      : `${verb} element ip ${LB_TABLE} ${name} { ${elements[key].join(", ")} }\n`,
  ).join("");
}

/** The whole table with its elements, replacing any previous copy in one transaction. */
export function renderLbTable(kind: LbKind, parts: Iterable<LbElements>): string {
  let text = `table ip ${LB_TABLE}\ndelete table ip ${LB_TABLE}\n${kind === "client" ? CLIENT : INGRESS}`;
  for (const part of parts) text += commands("add", part);
  return text;
}

/** Deletes the table, whether or not it exists (nft 1.0.6 has no `destroy`). */
export function renderLbTeardown(): string {
  return `table ip ${LB_TABLE}\ndelete table ip ${LB_TABLE}\n`;
}

function minus(a: string[], b: string[]): string[] {
  if (b.length === 0) return a;
  const drop = new Set(b);
  return a.filter((e) => !drop.has(e));
}

/**
 * Only the element changes from `had` to `want`; "" when there are none. Deletes come first: a
 * bucket range that moves to another backend is a delete and an add of overlapping intervals,
 * which the kernel refuses in the other order.
 */
export function renderLbDiff(had: LbElements, want: LbElements): string {
  const difference = (a: LbElements, b: LbElements): LbElements => ({
    vips: minus(a.vips, b.vips),
    backends: minus(a.backends, b.backends),
    meshPorts: minus(a.meshPorts, b.meshPorts),
    mesh: minus(a.mesh, b.mesh),
  });
  return commands("delete", difference(had, want)) + commands("add", difference(want, had));
}

interface Applied {
  kind: LbKind;
  /** by part (a network's id, or the mesh): the elements the kernel holds */
  parts: Map<string, LbElements>;
}

/**
 * Keeps what each sandbox's table holds and sends only differences. A sandbox's elements come in
 * parts that never share an element (one per network: VIPs and task addresses are addresses of
 * that network), so a part handed over as the same object as last time costs nothing to compare.
 * exec runs one nft batch atomically inside the namespace and throws on failure; the state of a
 * sandbox whose change failed is dropped, so the next apply replaces its table whole.
 */
export class LbApplier {
  readonly #applied = new Map<string, Applied>();

  constructor(private readonly exec: (nftText: string, nsPath: string) => void) {}

  has(nsPath: string): boolean {
    return this.#applied.has(nsPath);
  }

  /** The namespaces that hold a table. */
  paths(): string[] {
    return [...this.#applied.keys()];
  }

  /** Brings the sandbox's table to `want`; no parts at all removes the table. */
  apply(nsPath: string, kind: LbKind, want: Map<string, LbElements>): void {
    const had = this.#applied.get(nsPath);
    if (want.size === 0) {
      if (had) this.remove(nsPath);
      return;
    }
    if (!had || had.kind !== kind) {
      this.#send(nsPath, renderLbTable(kind, want.values()));
      this.#applied.set(nsPath, { kind, parts: new Map(want) });
      return;
    }
    let text = "";
    for (const [key, part] of want) {
      const before = had.parts.get(key) ?? EMPTY;
      if (before !== part) text += renderLbDiff(before, part);
    }
    for (const [key, part] of had.parts) if (!want.has(key)) text += renderLbDiff(part, EMPTY);
    if (text !== "") this.#send(nsPath, text);
    had.parts = new Map(want);
  }

  /** Deletes the sandbox's table. */
  remove(nsPath: string): void {
    this.#applied.delete(nsPath);
    this.exec(renderLbTeardown(), nsPath);
  }

  /** The sandbox is gone, and its table with it. */
  forget(nsPath: string): void {
    this.#applied.delete(nsPath);
  }

  #send(nsPath: string, text: string): void {
    try {
      this.exec(text, nsPath);
    } catch (err) {
      this.#applied.delete(nsPath);
      throw err;
    }
  }
}
