/**
 * Host ports given out to published container ports.
 *
 * Each binding is held by a real socket in the daemon's own network namespace (TCP listening,
 * UDP bound), for two reasons: a port another process already uses is refused with a clear error
 * instead of being silently shadowed by DNAT, and nobody else can take a published port while it
 * is published. The sockets never carry traffic for the container: nftables DNATs published ports
 * in the nat prerouting and output hooks, before the kernel looks for a local socket. The one case
 * that reaches them is a connection that cannot be forwarded (IPv6 to a container without an IPv6
 * address); TCP ones are closed at once, so the client sees a reset rather than a hang.
 *
 * Overlap follows the kernel's bind rules per family, as Docker's port allocator does: a binding
 * to every address of a family ("" or 0.0.0.0 / ::) conflicts with any binding of the same family,
 * protocol and port; two specific addresses conflict only when equal; IPv4 and IPv6 never do.
 */
import dgram from "node:dgram";
import { readFileSync } from "node:fs";
import net from "node:net";
import { ConflictError, InvalidParameterError, NotSupportedError, SystemError } from "../errors.js";
import type { PortBinding, PortBindingRequest, PortProto } from "./types.js";

const DEFAULT_EPHEMERAL: [number, number] = [32768, 60999];

/** The kernel's ephemeral port range (net.ipv4.ip_local_port_range), Docker's pool for `-p 80`. */
export function readEphemeralRange(path = "/proc/sys/net/ipv4/ip_local_port_range"): [number, number] {
  try {
    const [lo, hi] = readFileSync(path, "utf8").trim().split(/\s+/).map(Number);
    if (lo !== undefined && hi !== undefined && lo >= 1 && lo <= hi && hi <= 65535) return [lo, hi];
  } catch {
    // No /proc (or an odd one): Linux's own default is as good a pool as any.
  }
  return DEFAULT_EPHEMERAL;
}

export interface PortAllocatorOptions {
  /** The pool for ephemeral host ports; read from the kernel when left out. */
  ephemeralRange?: [number, number];
}

interface Socket {
  family: 4 | 6;
  close(): Promise<void>;
}

interface Held {
  binding: PortBinding;
  sockets: Socket[];
}

type Family = 4 | 6;

/** The addresses a binding covers, per family: "*" is every address of that family. */
function covers(hostIp: string): [Family, string][] {
  if (hostIp === "") {
    return [
      [4, "*"],
      [6, "*"],
    ];
  }
  const family = hostIp.includes(":") ? 6 : 4;
  return [[family, hostIp === "0.0.0.0" || hostIp === "::" ? "*" : hostIp]];
}

function overlaps(a: string, b: string): boolean {
  return covers(a).some(([fa, ia]) =>
    covers(b).some(([fb, ib]) => fa === fb && (ia === "*" || ib === "*" || ia === ib)),
  );
}

/** Docker's way of naming a host address in its errors: `0.0.0.0:8000`, `[::1]:8000`. */
export function hostAddress(hostIp: string, port: number | string): string {
  const ip = hostIp === "" ? "0.0.0.0" : hostIp;
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function closeDgram(sock: dgram.Socket): Promise<void> {
  return new Promise((resolve) => sock.close(() => resolve()));
}

async function bindSocket(proto: PortProto, address: string, port: number): Promise<Socket> {
  const family: Family = address.includes(":") ? 6 : 4;
  // ipv6Only keeps "::" from also taking the IPv4 port, which a separate socket holds (or not).
  const ipv6Only = family === 6;
  if (proto === "tcp") {
    const server = net.createServer((conn) => conn.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: address, port, exclusive: true, ipv6Only }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", () => {});
    server.unref();
    return { family, close: () => closeServer(server) };
  }
  const sock = dgram.createSocket({ type: family === 6 ? "udp6" : "udp4", ipv6Only });
  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind({ address, port, exclusive: true }, () => {
      sock.off("error", reject);
      resolve();
    });
  });
  sock.on("error", () => {});
  sock.unref();
  return { family, close: () => closeDgram(sock) };
}

/** Thrown inside the allocator when another process holds the port, so a range scan can go on. */
class PortInUse extends ConflictError {}

export class PortAllocator {
  readonly ephemeralRange: [number, number];
  /** By `proto/port`: every binding of that protocol and port number, held or being bound. */
  readonly #held = new Map<string, Held[]>();
  readonly #next: Record<PortProto, number>;
  /** Cleared on the first EAFNOSUPPORT: "" bindings then hold the IPv4 port only. */
  #ipv6 = true;

  constructor(opts: PortAllocatorOptions = {}) {
    this.ephemeralRange = opts.ephemeralRange ?? readEphemeralRange();
    this.#next = { tcp: this.ephemeralRange[0], udp: this.ephemeralRange[0] };
  }

  /**
   * Gives out a host port for each request, or none at all: on any failure the ports already
   * taken by this call are released and the error is thrown (ConflictError for a taken port,
   * InvalidParameterError for an address the host does not have).
   */
  async reserve(requests: PortBindingRequest[]): Promise<PortBinding[]> {
    const taken: PortBinding[] = [];
    try {
      for (const r of requests) taken.push(await this.#reserveOne(r));
    } catch (err) {
      await this.release(taken);
      throw err;
    }
    return taken;
  }

  /** After a daemon restart: takes exactly these bindings again, all or none. */
  restore(bindings: PortBinding[]): Promise<PortBinding[]> {
    return this.reserve(
      bindings.map((b) => ({
        proto: b.proto,
        hostIp: b.hostIp,
        hostPortStart: b.hostPort,
        hostPortEnd: b.hostPort,
        containerPort: b.containerPort,
      })),
    );
  }

  /** Closes the sockets holding these bindings; bindings not held are ignored. */
  async release(bindings: PortBinding[]): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const b of bindings) {
      const key = `${b.proto}/${b.hostPort}`;
      const list = this.#held.get(key) ?? [];
      const i = list.findIndex((h) => h.binding.hostIp === b.hostIp);
      if (i === -1) continue;
      const [held] = list.splice(i, 1);
      if (list.length === 0) this.#held.delete(key);
      for (const s of held?.sockets ?? []) closing.push(s.close());
    }
    await Promise.all(closing);
  }

  /** Every binding held, for diagnostics and tests. */
  held(): PortBinding[] {
    return [...this.#held.values()].flat().map((h) => ({ ...h.binding }));
  }

  async #reserveOne(r: PortBindingRequest): Promise<PortBinding> {
    const fixed = r.hostPortStart !== 0 && r.hostPortStart === r.hostPortEnd;
    if (fixed) return this.#take(r, r.hostPortStart);
    const ephemeral = r.hostPortStart === 0;
    const [lo, hi] = ephemeral ? this.ephemeralRange : [r.hostPortStart, r.hostPortEnd];
    const size = hi - lo + 1;
    // Ephemeral ports go round-robin so a port just released is not handed out again at once;
    // a user's range is scanned from its start, so `-p 8000-8010:80` prefers 8000, as in Docker.
    const first = ephemeral ? this.#next[r.proto] : lo;
    for (let i = 0; i < size; i++) {
      const port = lo + ((first - lo + i) % size);
      if (this.#conflict(r.proto, r.hostIp, port)) continue;
      try {
        const b = await this.#take(r, port);
        if (ephemeral) this.#next[r.proto] = port === hi ? lo : port + 1;
        return b;
      } catch (err) {
        if (!(err instanceof PortInUse)) throw err;
      }
    }
    throw new ConflictError(
      `Bind for ${hostAddress(r.hostIp, `${lo}-${hi}`)} failed: no free ${r.proto} port in the range`,
    );
  }

  #conflict(proto: PortProto, hostIp: string, port: number): boolean {
    return (this.#held.get(`${proto}/${port}`) ?? []).some((h) => overlaps(h.binding.hostIp, hostIp));
  }

  /** Records the binding first, so a concurrent reserve sees it while its sockets are being bound. */
  async #take(r: PortBindingRequest, port: number): Promise<PortBinding> {
    const binding: PortBinding = {
      proto: r.proto,
      hostIp: r.hostIp,
      hostPort: port,
      containerPort: r.containerPort,
    };
    if (this.#conflict(r.proto, r.hostIp, port)) {
      throw new ConflictError(`Bind for ${hostAddress(r.hostIp, port)} failed: port is already allocated`);
    }
    const key = `${r.proto}/${port}`;
    const held: Held = { binding, sockets: [] };
    this.#held.set(key, [...(this.#held.get(key) ?? []), held]);
    try {
      for (const address of this.#addresses(r.hostIp)) {
        try {
          held.sockets.push(await bindSocket(r.proto, address, port));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // "" means IPv6 too where the host has it; a host without IPv6 still publishes on IPv4.
          if (r.hostIp === "" && address === "::" && (code === "EAFNOSUPPORT" || code === "EADDRNOTAVAIL")) {
            if (code === "EAFNOSUPPORT") this.#ipv6 = false;
            continue;
          }
          throw bindError(err as NodeJS.ErrnoException, r.proto, address, port);
        }
      }
    } catch (err) {
      await this.release([binding]);
      throw err;
    }
    return binding;
  }

  #addresses(hostIp: string): string[] {
    if (hostIp !== "") return [hostIp];
    return this.#ipv6 ? ["0.0.0.0", "::"] : ["0.0.0.0"];
  }
}

function bindError(err: NodeJS.ErrnoException, proto: PortProto, address: string, port: number): Error {
  const where = `Bind for ${hostAddress(address, port)}${proto === "udp" ? "/udp" : ""} failed`;
  switch (err.code) {
    case "EADDRINUSE":
      return new PortInUse(`${where}: address already in use by another process on the host`);
    case "EADDRNOTAVAIL":
      return new InvalidParameterError(`${where}: ${address} is not an address of this host`);
    case "EAFNOSUPPORT":
      return new NotSupportedError(`${where}: IPv6 is disabled on this host`);
    default:
      return new SystemError(`${where}: ${err.message}`);
  }
}
