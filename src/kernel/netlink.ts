/**
 * Typed rtnetlink client over netlink@0.3.0: links (bridge, veth, macvlan, ipvlan, vlan, vxlan),
 * addresses, routes, and the static forwarding and neighbour entries of VXLAN devices.
 *
 * Each call is one request on a NETLINK_ROUTE socket. The kernel does the work inside sendmsg(),
 * which the package issues on the main thread, so a call keeps the event loop busy for its whole
 * duration: 0.1–0.8 ms for everything here except deleting a veth, ~20 ms (kernel RCU waits).
 * Tearing a container down should therefore delete its namespace, which returns at once and lets
 * the kernel destroy the veth pair in the background, and keep deleteLink for the rarer cases.
 * Links are addressed by name wherever the kernel accepts IFLA_IFNAME, which saves a name→index
 * lookup per call.
 */
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { isIP } from "node:net";
import { constants as osConstants } from "node:os";
import ipaddr from "ipaddr.js";
import { createRtNetlink, FlagsNew, type ifla, type RtNetlinkSocket, rt } from "netlink";
import {
  ConflictError,
  InvalidParameterError,
  NotFoundError,
  NotSupportedError,
  SystemError,
} from "../errors.js";
import { withNetns } from "./netns.js";
import { attr, attrNested, attrString, attrU32, parseAttrs, payloadString } from "./nlattr.js";

export interface LinkInfo {
  index: number;
  name: string;
  kind?: string;
  /** IFLA_IFALIAS; ctnet tags the links it creates with `ctnet:<id>` so reconcile can find them. */
  alias?: string;
  masterIndex?: number;
  mtu: number;
  mac: string;
  up: boolean;
}

export interface AddressInfo {
  ifname: string;
  cidr: string;
  family: 4 | 6;
}

export interface RouteSpec {
  /** "default" or a CIDR */
  dst: string;
  gateway?: string;
  dev?: string;
  /** Only needed when neither dst nor gateway tells (a default route without gateway). */
  family?: 4 | 6;
}

export interface RouteInfo {
  dst: string;
  gateway?: string;
  dev?: string;
  table: number;
  protocol?: number;
}

/** A kernel refusal that maps to no more specific error; keeps the errno for callers that care. */
export class NetlinkError extends SystemError {
  constructor(
    message: string,
    readonly code: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

// linux/if_link.h, linux/veth.h, linux/rtnetlink.h
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_NET_NS_FD = 28;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const IFLA_INFO_SLAVE_KIND = 4;
const IFLA_INFO_SLAVE_DATA = 5;
const IFLA_BRPORT_MODE = 4;
const VETH_INFO_PEER = 1;
const IFINFOMSG_LEN = 16;
const AF_INET = 2;
const AF_BRIDGE = 7;
const AF_INET6 = 10;
const RT_TABLE_MAIN = 254;

/** The kernel answers rtnetlink requests synchronously; the timeout only bounds a lost reply. */
const OPTS = { timeout: 10_000 };
const CREATE_EXCL = { ...OPTS, flags: FlagsNew.CREATE | FlagsNew.EXCL };
const CREATE_REPLACE = { ...OPTS, flags: FlagsNew.CREATE | FlagsNew.REPLACE };
const IFNAMSIZ = 16;
/** IFLA_EXT_MASK = RTEXT_FILTER_SKIP_STATS: ctnet never reads link counters, and parsing them costs ~30 µs a link. */
const SKIP_STATS = Buffer.from(new Uint32Array([1 << 3]).buffer);

const KERNEL_OPTION: Record<string, string> = {
  bridge: "CONFIG_BRIDGE",
  veth: "CONFIG_VETH",
  macvlan: "CONFIG_MACVLAN",
  ipvlan: "CONFIG_IPVLAN",
  vlan: "CONFIG_VLAN_8021Q",
  vxlan: "CONFIG_VXLAN",
};

// linux/if_link.h: IFLA_VXLAN_*
const IFLA_VXLAN_ID = 1;
const IFLA_VXLAN_LINK = 3;
const IFLA_VXLAN_LOCAL = 4;
const IFLA_VXLAN_LEARNING = 7;
const IFLA_VXLAN_PROXY = 11;
const IFLA_VXLAN_PORT = 15;

// linux/if_link.h: IFLA_MACVLAN_*, IFLA_IPVLAN_*, IFLA_VLAN_*
const IFLA_MACVLAN_MODE = 1;
const IFLA_IPVLAN_MODE = 1;
const IFLA_IPVLAN_FLAGS = 2;
const IFLA_VLAN_ID = 1;
const MACVLAN_MODES = { private: 1, vepa: 2, bridge: 4, passthru: 8 } as const;
const IPVLAN_MODES = { l2: 0, l3: 1, l3s: 2 } as const;
const IPVLAN_FLAGS = { bridge: 0, private: 1, vepa: 2 } as const;
const attrU16 = (type: number, v: number): Buffer => attr(type, Buffer.from(new Uint16Array([v]).buffer));

export type MacvlanMode = keyof typeof MACVLAN_MODES;
export type IpvlanMode = keyof typeof IPVLAN_MODES;
export type IpvlanFlag = keyof typeof IPVLAN_FLAGS;

/** A link stacked on a lower one (the parent) of this namespace, optionally created in another. */
export interface LowerLinkSpec {
  name: string;
  parent: string;
  /** created directly in that namespace (IFLA_NET_NS_FD), like a veth peer */
  netnsPath?: string;
}

export class Netlink {
  /** Requests run one at a time: a socket may have only one dump in progress (else EBUSY). */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly sock: RtNetlinkSocket) {
    // Without a listener a receive error would be thrown as an uncaught 'error' event; the request
    // it concerns fails by timeout instead.
    sock.socket.on("error", () => {});
  }

  /** A socket in the namespace at nsPath, or in the current one if omitted. */
  static open(nsPath?: string): Netlink {
    if (nsPath === undefined) return new Netlink(createRtNetlink());
    try {
      // The package creates and binds the native socket synchronously in its constructor, so the
      // socket belongs to whichever namespace the thread is in at that moment.
      return new Netlink(withNetns(nsPath, () => createRtNetlink()));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") {
        throw new NotFoundError(`network namespace ${nsPath} not found`);
      }
      throw e;
    }
  }

  /** Requests still in flight are dropped by the package and fail only at their timeout. */
  close(): void {
    this.sock.socket.close();
  }

  async listLinks(): Promise<LinkInfo[]> {
    const msgs = await this.run("list links", () => this.sock.getLinks({}, { extMask: SKIP_STATS }, OPTS));
    return msgs.map(toLinkInfo);
  }

  async getLink(name: string): Promise<LinkInfo | undefined> {
    checkIfname(name);
    try {
      const [msg] = await this.run(`get link ${name}`, () =>
        this.sock.getLink({}, { ifname: name, extMask: SKIP_STATS }, OPTS),
      );
      return msg && toLinkInfo(msg);
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  async createBridge(o: { name: string; mtu?: number; alias?: string; mac?: string }): Promise<void> {
    checkIfname(o.name);
    await this.newLink(o, "bridge", []);
  }

  /**
   * The peer is created directly inside peerNetnsPath (IFLA_NET_NS_FD on the peer), so it never
   * appears in this namespace and may take a name, like eth0, that is taken here.
   */
  async createVeth(o: {
    name: string;
    peerName: string;
    peerNetnsPath?: string;
    mtu?: number;
    mac?: string;
    peerMac?: string;
    alias?: string;
  }): Promise<void> {
    checkIfname(o.name);
    checkIfname(o.peerName);
    const peerAttrs = [attrString(IFLA_IFNAME, o.peerName)];
    if (o.mtu !== undefined) peerAttrs.push(attrU32(IFLA_MTU, checkMtu(o.mtu)));
    if (o.peerMac !== undefined) peerAttrs.push(attr(IFLA_ADDRESS, parseMac(o.peerMac)));
    const nsFd = o.peerNetnsPath === undefined ? undefined : openNetns(o.peerNetnsPath);
    try {
      if (nsFd !== undefined) peerAttrs.push(attrU32(IFLA_NET_NS_FD, nsFd));
      // VETH_INFO_PEER holds an ifinfomsg before its attributes, so it is not a plain nested
      // attribute and the kernel's policy for it is a length, not NLA_NESTED.
      const peer = attr(VETH_INFO_PEER, Buffer.concat([Buffer.alloc(IFINFOMSG_LEN), ...peerAttrs]));
      await this.newLink(o, "veth", [attrNested(IFLA_INFO_DATA, [peer])]);
    } finally {
      if (nsFd !== undefined) closeSync(nsFd);
    }
  }

  /** The macvlan gets its own MAC (mac, else a random one) on the parent's segment. */
  async createMacvlan(o: LowerLinkSpec & { mode: MacvlanMode; mac?: string }): Promise<void> {
    await this.newLowerLink(o, "macvlan", [attrU32(IFLA_MACVLAN_MODE, MACVLAN_MODES[o.mode])], o.mac);
  }

  /** An ipvlan shares the parent's MAC, so it takes none of its own. */
  async createIpvlan(o: LowerLinkSpec & { mode: IpvlanMode; flag: IpvlanFlag }): Promise<void> {
    await this.newLowerLink(o, "ipvlan", [
      attrU16(IFLA_IPVLAN_MODE, IPVLAN_MODES[o.mode]),
      attrU16(IFLA_IPVLAN_FLAGS, IPVLAN_FLAGS[o.flag]),
    ]);
  }

  /** An 802.1Q sub-interface of parent, in this namespace, tagged with alias like createBridge's links. */
  async createVlan(o: { name: string; parent: string; id: number; alias?: string }): Promise<void> {
    if (!Number.isInteger(o.id) || o.id < 1 || o.id > 4094) {
      throw new InvalidParameterError(`VLAN id must be between 1 and 4094, got ${o.id}`);
    }
    await this.newLowerLink(o, "vlan", [attrU16(IFLA_VLAN_ID, o.id)]);
    if (o.alias === undefined) return;
    try {
      await this.setAlias(o.name, o.alias);
    } catch (e) {
      await this.deleteLink(o.name).catch(() => {});
      throw e;
    }
  }

  /**
   * Whether the kernel has a kind of stacked link, asked without creating anything: a request
   * without a lower link fails with EINVAL where the kind exists and EOPNOTSUPP where it does not
   * (after the kernel tried to load its module), so no link ever appears, even for a moment.
   */
  async hasLinkKind(kind: "macvlan" | "ipvlan" | "vlan"): Promise<boolean> {
    const name = `ctnp${randomBytes(5).toString("hex")}`;
    const linkinfo = attrString(IFLA_INFO_KIND, kind);
    try {
      await this.run(`probe ${kind} links`, () =>
        this.sock.newLink({}, { ifname: name, linkinfo }, CREATE_EXCL),
      );
    } catch (e) {
      return !isNotSupported(e);
    }
    // A kernel that accepted a lower-less link must not keep it.
    await this.deleteLink(name);
    return true;
  }

  /**
   * A VXLAN device sending from `local` through `dev`. Learning is off and ARP is answered by the
   * device itself (proxy) from its static neighbour entries: remote endpoints are programmed from
   * the cluster store, so nothing is flooded to discover them.
   */
  async createVxlan(o: {
    name: string;
    vni: number;
    local: string;
    dev: string;
    port: number;
    mtu?: number;
    alias?: string;
  }): Promise<void> {
    checkIfname(o.name);
    if (!Number.isInteger(o.vni) || o.vni < 1 || o.vni > 0xffffff) {
      throw new InvalidParameterError(`VXLAN id must be between 1 and 16777215, got ${o.vni}`);
    }
    const local = parseIp(o.local);
    if (local.kind() !== "ipv4")
      throw new InvalidParameterError(`VXLAN local address ${o.local} is not IPv4`);
    const port = Buffer.alloc(2);
    port.writeUInt16BE(o.port);
    await this.newLink(o, "vxlan", [
      attrNested(IFLA_INFO_DATA, [
        attrU32(IFLA_VXLAN_ID, o.vni),
        attrU32(IFLA_VXLAN_LINK, await this.indexOf(o.dev)),
        attr(IFLA_VXLAN_LOCAL, Buffer.from(local.toByteArray())),
        attr(IFLA_VXLAN_LEARNING, Buffer.from([0])),
        attr(IFLA_VXLAN_PROXY, Buffer.from([1])),
        attr(IFLA_VXLAN_PORT, port),
      ]),
    ]);
  }

  /** A permanent forwarding entry of a VXLAN device: frames for `mac` go to the VTEP at `dst`. */
  async addFdb(dev: string, mac: string, dst: string): Promise<void> {
    const ifindex = await this.indexOf(dev);
    await this.run(`add fdb ${mac} dst ${dst} dev ${dev}`, () =>
      this.sock.newNeighbor(
        { family: AF_BRIDGE, ifindex, state: { permanent: true }, flags: { self: true } },
        { lladdr: parseMac(mac), dst: Buffer.from(parseIp(dst).toByteArray()) },
        CREATE_REPLACE,
      ),
    );
  }

  /** Idempotent: an entry that is gone already is not an error. */
  async delFdb(dev: string, mac: string, dst: string): Promise<void> {
    const ifindex = await this.indexOf(dev);
    try {
      await this.run(`delete fdb ${mac} dev ${dev}`, () =>
        this.sock.delNeighbor(
          { family: AF_BRIDGE, ifindex, flags: { self: true } },
          { lladdr: parseMac(mac), dst: Buffer.from(parseIp(dst).toByteArray()) },
          OPTS,
        ),
      );
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }

  /** A permanent neighbour entry (IP → MAC) on `dev`. */
  async addNeighbour(dev: string, ip: string, mac: string): Promise<void> {
    const ifindex = await this.indexOf(dev);
    const addr = parseIp(ip);
    await this.run(`add neighbour ${ip} lladdr ${mac} dev ${dev}`, () =>
      this.sock.newNeighbor(
        { family: addr.kind() === "ipv6" ? AF_INET6 : AF_INET, ifindex, state: { permanent: true } },
        { dst: Buffer.from(addr.toByteArray()), lladdr: parseMac(mac) },
        CREATE_REPLACE,
      ),
    );
  }

  /** Idempotent, like delFdb. */
  async delNeighbour(dev: string, ip: string): Promise<void> {
    const ifindex = await this.indexOf(dev);
    const addr = parseIp(ip);
    try {
      await this.run(`delete neighbour ${ip} dev ${dev}`, () =>
        this.sock.delNeighbor(
          { family: addr.kind() === "ipv6" ? AF_INET6 : AF_INET, ifindex },
          { dst: Buffer.from(addr.toByteArray()) },
          OPTS,
        ),
      );
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }

  /** master null detaches the link from its bridge. */
  async setMaster(name: string, master: string | null): Promise<void> {
    const masterIndex = master === null ? 0 : await this.indexOf(master);
    await this.setLink(name, `set master of ${name} to ${master ?? "none"}`, {}, { master: masterIndex });
  }

  async setUp(name: string, up = true): Promise<void> {
    await this.setLink(
      name,
      `set ${name} ${up ? "up" : "down"}`,
      { change: { up: true }, flags: up ? { up: true } : {} },
      {},
    );
  }

  async setMtu(name: string, mtu: number): Promise<void> {
    await this.setLink(name, `set mtu of ${name} to ${mtu}`, {}, { mtu: checkMtu(mtu) });
  }

  async setMac(name: string, mac: string): Promise<void> {
    await this.setLink(name, `set mac of ${name} to ${mac}`, {}, { address: parseMac(mac) });
  }

  /**
   * Hairpin mode on a bridge port: frames may leave through the port they came in on, so a
   * container can reach its own published port through the host's address. Bridge port options
   * are only changed through RTM_NEWLINK with slave data (what `ip link set … type bridge_slave`
   * sends); RTM_SETLINK would need a nested IFLA_PROTINFO the netlink package cannot flag.
   */
  async setHairpin(name: string, on: boolean): Promise<void> {
    const index = await this.indexOf(name);
    const linkinfo = Buffer.concat([
      attrString(IFLA_INFO_SLAVE_KIND, "bridge"),
      attrNested(IFLA_INFO_SLAVE_DATA, [attr(IFLA_BRPORT_MODE, Buffer.from([on ? 1 : 0]))]),
    ]);
    await this.run(`set hairpin of ${name}`, () => this.sock.newLink({ index }, { linkinfo }, OPTS));
  }

  async setAlias(name: string, alias: string): Promise<void> {
    await this.setLink(name, `set alias of ${name}`, {}, { ifalias: alias });
  }

  /** A missing link is not an error: teardown must be idempotent. */
  async deleteLink(name: string): Promise<void> {
    checkIfname(name);
    try {
      await this.run(`delete link ${name}`, () => this.sock.delLink({}, { ifname: name }, OPTS));
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }

  /** An address already present is not an error. noDad sets IFA_F_NODAD on IPv6 addresses. */
  async addAddress(name: string, cidr: string, o: { noDad?: boolean } = {}): Promise<void> {
    const [ip, prefixlen] = parseCidr(cidr);
    const index = await this.indexOf(name);
    const v6 = ip.kind() === "ipv6";
    const bytes = Buffer.from(ip.toByteArray());
    const attrs: rt.AddressAttrs = { local: bytes, address: bytes };
    // Like `ip addr add … brd +`: without it the subnet's broadcast address is not local.
    if (!v6 && prefixlen < 31) {
      attrs.broadcast = Buffer.from(ipaddr.IPv4.broadcastAddressFromCIDR(cidr).toByteArray());
    }
    const data: rt.Address = { family: v6 ? AF_INET6 : AF_INET, prefixlen, index };
    if (v6 && o.noDad) data.flags = { nodad: true };
    try {
      await this.run(`add address ${cidr} to ${name}`, () => this.sock.newAddress(data, attrs, CREATE_EXCL));
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
    }
  }

  /** An address (or link) already gone is not an error. */
  async delAddress(name: string, cidr: string): Promise<void> {
    const [ip, prefixlen] = parseCidr(cidr);
    const index = (await this.getLink(name))?.index;
    if (index === undefined) return;
    const family = ip.kind() === "ipv6" ? AF_INET6 : AF_INET;
    const bytes = Buffer.from(ip.toByteArray());
    try {
      await this.run(`delete address ${cidr} from ${name}`, () =>
        this.sock.delAddress({ family, prefixlen, index }, { local: bytes, address: bytes }, OPTS),
      );
    } catch (e) {
      if (!(e instanceof NetlinkError && e.code === "EADDRNOTAVAIL")) throw e;
    }
  }

  /** Addresses of one link, or of all links when name is omitted. */
  async listAddresses(name?: string): Promise<AddressInfo[]> {
    let names: Map<number, string>;
    if (name === undefined) {
      names = new Map((await this.listLinks()).map((l) => [l.index, l.name]));
    } else {
      names = new Map([[await this.indexOf(name), name]]);
    }
    // Without NETLINK_GET_STRICT_CHK the kernel ignores dump filters, so filter here.
    const msgs = await this.run("list addresses", () => this.sock.getAddresses({}, {}, OPTS));
    const out: AddressInfo[] = [];
    for (const m of msgs) {
      const ifname = names.get(m.data.index ?? 0);
      const bytes = m.attrs.local ?? m.attrs.address;
      if (ifname === undefined || bytes === undefined) continue;
      out.push({
        ifname,
        cidr: `${ipString(bytes)}/${m.data.prefixlen}`,
        family: m.data.family === AF_INET6 ? 6 : 4,
      });
    }
    return out;
  }

  /** A route to the same destination already present is not an error. */
  async addRoute(o: RouteSpec): Promise<void> {
    const { data, attrs } = await this.routeMessage(o);
    data.protocol = rt.RouteProtocol.STATIC;
    data.scope = o.gateway === undefined ? rt.RouteScope.LINK : rt.RouteScope.UNIVERSE;
    data.type = rt.RouteType.UNICAST;
    try {
      await this.run(`add route ${describeRoute(o)}`, () => this.sock.newRoute(data, attrs, CREATE_EXCL));
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
    }
  }

  /** A route already gone, or whose device is gone, is not an error. */
  async delRoute(o: RouteSpec): Promise<void> {
    try {
      const { data, attrs } = await this.routeMessage(o);
      // NOWHERE, with protocol and type left 0, matches a route of any scope, origin and type.
      data.scope = rt.RouteScope.NOWHERE;
      await this.run(`delete route ${describeRoute(o)}`, () => this.sock.delRoute(data, attrs, OPTS));
    } catch (e) {
      // IPv4 answers ESRCH for a missing route, IPv6 ENOENT (a NotFoundError).
      if (!(e instanceof NotFoundError || (e instanceof NetlinkError && e.code === "ESRCH"))) throw e;
    }
  }

  /** Routes of the main table. */
  async listRoutes(family: 4 | 6): Promise<RouteInfo[]> {
    const links = await this.listLinks();
    const names = new Map(links.map((l) => [l.index, l.name]));
    const msgs = await this.run("list routes", () =>
      this.sock.getRoutes({ family: family === 6 ? AF_INET6 : AF_INET }, {}, OPTS),
    );
    const out: RouteInfo[] = [];
    for (const { data, attrs } of msgs) {
      const table = attrs.table ?? data.table;
      if (table !== RT_TABLE_MAIN || data.family !== (family === 6 ? AF_INET6 : AF_INET)) continue;
      const r: RouteInfo = {
        dst: data.dstLen && attrs.dst ? `${ipString(attrs.dst)}/${data.dstLen}` : "default",
        table,
      };
      if (attrs.gateway) r.gateway = ipString(attrs.gateway);
      const dev = attrs.oif === undefined ? undefined : names.get(attrs.oif);
      if (dev !== undefined) r.dev = dev;
      if (data.protocol !== undefined) {
        r.protocol = typeof data.protocol === "number" ? data.protocol : rt.RouteProtocol[data.protocol];
      }
      out.push(r);
    }
    return out;
  }

  private async newLink(
    o: { name: string; mtu?: number; alias?: string; mac?: string },
    kind: string,
    info: Buffer[],
  ): Promise<void> {
    const attrs: ifla.LinkAttrs = { ifname: o.name };
    if (o.mtu !== undefined) attrs.mtu = checkMtu(o.mtu);
    if (o.mac !== undefined) attrs.address = parseMac(o.mac);
    attrs.linkinfo = Buffer.concat([attrString(IFLA_INFO_KIND, kind), ...info]);
    try {
      await this.run(`create ${kind} ${o.name}`, () => this.sock.newLink({}, attrs, CREATE_EXCL));
    } catch (e) {
      if (isNotSupported(e)) {
        throw new NotSupportedError(
          `cannot create ${kind} ${o.name}: the kernel lacks ${kind} links (${KERNEL_OPTION[kind] ?? kind})`,
        );
      }
      throw e;
    }
    if (o.alias === undefined) return;
    // RTM_NEWLINK silently ignores IFLA_IFALIAS (only RTM_SETLINK applies it), so the alias is a
    // second request; a link that cannot carry ctnet's mark must not survive unmarked.
    try {
      await this.setAlias(o.name, o.alias);
    } catch (e) {
      await this.deleteLink(o.name).catch(() => {});
      throw e;
    }
  }

  /** IFLA_LINK names the parent by index in this namespace even when the link is created in another. */
  private async newLowerLink(o: LowerLinkSpec, kind: string, data: Buffer[], mac?: string): Promise<void> {
    checkIfname(o.name);
    const parentIndex = await this.indexOf(o.parent);
    const attrs: ifla.LinkAttrs = {
      ifname: o.name,
      link: Buffer.from(new Uint32Array([parentIndex]).buffer),
      linkinfo: Buffer.concat([attrString(IFLA_INFO_KIND, kind), attrNested(IFLA_INFO_DATA, data)]),
    };
    if (mac !== undefined) attrs.address = parseMac(mac);
    const nsFd = o.netnsPath === undefined ? undefined : openNetns(o.netnsPath);
    try {
      if (nsFd !== undefined) attrs.netNsFd = nsFd;
      await this.run(`create ${kind} ${o.name} on ${o.parent}`, () =>
        this.sock.newLink({}, attrs, CREATE_EXCL),
      );
    } catch (e) {
      if (isNotSupported(e)) {
        throw new NotSupportedError(
          `cannot create ${kind} ${o.name} on ${o.parent}: the kernel lacks ${kind} links (${KERNEL_OPTION[kind] ?? kind})`,
        );
      }
      throw e;
    } finally {
      if (nsFd !== undefined) closeSync(nsFd);
    }
  }

  private async setLink(name: string, what: string, data: rt.Link, attrs: ifla.LinkAttrs): Promise<void> {
    checkIfname(name);
    await this.run(what, () => this.sock.setLink(data, { ...attrs, ifname: name }, OPTS));
  }

  private async indexOf(name: string): Promise<number> {
    const link = await this.getLink(name);
    if (!link) throw new NotFoundError(`link ${name} not found`);
    return link.index;
  }

  private async routeMessage(o: RouteSpec): Promise<{ data: rt.Route; attrs: rt.RouteAttrs }> {
    let family = o.family;
    const attrs: rt.RouteAttrs = {};
    let dstLen = 0;
    if (o.dst !== "default") {
      const [ip, len] = parseCidr(o.dst);
      family = checkFamily(family, ip, o.dst);
      attrs.dst = Buffer.from(ip.toByteArray());
      dstLen = len;
    }
    if (o.gateway !== undefined) {
      const gw = parseIp(o.gateway);
      family = checkFamily(family, gw, o.gateway);
      attrs.gateway = Buffer.from(gw.toByteArray());
    }
    if (o.dev !== undefined) attrs.oif = await this.indexOf(o.dev);
    return { data: { family: family === 6 ? AF_INET6 : AF_INET, dstLen, table: RT_TABLE_MAIN }, attrs };
  }

  /** Serialises the request and turns the package's errors into ctnet's typed errors. */
  private run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(async () => {
      try {
        return await fn();
      } catch (e) {
        throw mapError(what, e);
      }
    });
    this.queue = p.catch(() => {});
    return p;
  }
}

/** netlink@0.3.0 reports a kernel refusal only as `Error("Request rejected: <CODE>")`. */
function mapError(what: string, e: unknown): Error {
  const msg = e instanceof Error ? e.message : String(e);
  const m = /^Request rejected: (\w+)$/.exec(msg);
  if (!m?.[1]) return new SystemError(`${what}: ${msg}`);
  const code = m[1];
  const errno = (osConstants.errno as Record<string, number | undefined>)[code] ?? Number(code);
  switch (code) {
    case "EEXIST":
      return new ConflictError(`${what}: already exists`);
    case "ENODEV":
      return new NotFoundError(`${what}: no such device`);
    case "ENOENT":
      return new NotFoundError(`${what}: not found`);
    default:
      return new NetlinkError(`${what}: ${code} (errno ${errno})`, code, errno);
  }
}

/** Errno 95 is named ENOTSUP by the netlink package (as by libuv), EOPNOTSUPP by the kernel's headers. */
const isNotSupported = (e: unknown): boolean =>
  e instanceof NetlinkError && (e.code === "ENOTSUP" || e.code === "EOPNOTSUPP");

function toLinkInfo(m: rt.LinkMessage): LinkInfo {
  const { data, attrs } = m;
  const info: LinkInfo = {
    index: data.index ?? 0,
    name: attrs.ifname ?? "",
    mtu: attrs.mtu ?? 0,
    mac: attrs.address ? formatMac(attrs.address) : "",
    up: data.flags?.up === true,
  };
  const kind = attrs.linkinfo && parseAttrs(attrs.linkinfo).get(IFLA_INFO_KIND);
  if (kind) info.kind = payloadString(kind);
  if (attrs.ifalias) info.alias = attrs.ifalias;
  if (attrs.master) info.masterIndex = attrs.master;
  return info;
}

function openNetns(path: string): number {
  try {
    return openSync(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new NotFoundError(`network namespace ${path} not found`);
    throw new SystemError(`open network namespace ${path}: ${code ?? String(e)}`);
  }
}

function checkIfname(name: string): void {
  // The kernel's dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or whitespace.
  if (
    name.length === 0 ||
    Buffer.byteLength(name) >= IFNAMSIZ ||
    name === "." ||
    name === ".." ||
    /[/:\s]/.test(name)
  ) {
    throw new InvalidParameterError(`invalid interface name ${JSON.stringify(name)}`);
  }
}

function checkMtu(mtu: number): number {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new InvalidParameterError(`invalid MTU ${mtu}`);
  }
  return mtu;
}

function parseMac(mac: string): Buffer {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) {
    throw new InvalidParameterError(`invalid MAC address ${JSON.stringify(mac)}`);
  }
  const b = Buffer.from(mac.replaceAll(":", ""), "hex");
  if ((b[0] ?? 0) & 1) throw new InvalidParameterError(`MAC address ${mac} is multicast`);
  return b;
}

const formatMac = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");

/** Strict dotted-quad / RFC 4291 text only: ipaddr.js alone would also take forms like "10" or "0x0a.1". */
function parseIp(s: string): ipaddr.IPv4 | ipaddr.IPv6 {
  if (isIP(s) === 0) throw new InvalidParameterError(`invalid IP address ${JSON.stringify(s)}`);
  return ipaddr.parse(s);
}

function parseCidr(s: string): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  const [addr = "", len = "", ...rest] = s.split("/");
  const v = isIP(addr);
  const prefixlen = Number(len);
  if (v === 0 || rest.length > 0 || !/^\d{1,3}$/.test(len) || prefixlen > (v === 6 ? 128 : 32)) {
    throw new InvalidParameterError(`invalid CIDR ${JSON.stringify(s)}`);
  }
  return [ipaddr.parse(addr), prefixlen];
}

function checkFamily(family: 4 | 6 | undefined, ip: ipaddr.IPv4 | ipaddr.IPv6, what: string): 4 | 6 {
  const f = ip.kind() === "ipv6" ? 6 : 4;
  if (family !== undefined && family !== f) {
    throw new InvalidParameterError(`${what} is not an IPv${family} address`);
  }
  return f;
}

const ipString = (b: Buffer): string => ipaddr.fromByteArray([...b]).toString();

const describeRoute = (o: RouteSpec): string =>
  [o.dst, o.gateway && `via ${o.gateway}`, o.dev && `dev ${o.dev}`].filter(Boolean).join(" ");
