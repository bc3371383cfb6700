import { readFileSync } from "node:fs";

export interface HostsEntry {
  address: string;
  names: string[];
}

/** /etc/hosts of a container: loopback names, then its own addresses under its hostname. */
export function renderHosts(entries: HostsEntry[]): string {
  const lines = [
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "ff00::0\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
  ];
  for (const e of entries) lines.push(`${e.address}\t${e.names.join(" ")}`);
  return `${lines.join("\n")}\n`;
}

export interface ResolvConf {
  nameservers: string[];
  search: string[];
  options: string[];
}

export function parseResolvConf(text: string): ResolvConf {
  const conf: ResolvConf = { nameservers: [], search: [], options: [] };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const [key, ...rest] = line.split(/\s+/);
    if (key === "nameserver" && rest[0]) conf.nameservers.push(rest[0]);
    else if (key === "search" || key === "domain") conf.search = rest;
    else if (key === "options") conf.options.push(...rest);
  }
  return conf;
}

const isLoopback = (ip: string) => ip.startsWith("127.") || ip === "::1";

export const EMBEDDED_DNS = "127.0.0.11";

/**
 * resolv.conf for a container on its own network namespace. With the embedded resolver (user-defined
 * networks) it points at 127.0.0.11, which forwards what it does not know; otherwise it lists the
 * container's --dns servers, else the host's without loopback resolvers (unreachable from the
 * container), as Docker does. Search domains and options come from the host's file.
 */
export function renderResolvConf(
  dns: string[],
  embedded: boolean,
  hostResolvConf = "/etc/resolv.conf",
): string {
  let host: ResolvConf = { nameservers: [], search: [], options: [] };
  try {
    host = parseResolvConf(readFileSync(hostResolvConf, "utf8"));
  } catch {
    // a host without resolv.conf: containers get no resolver either
  }
  const servers = embedded
    ? [EMBEDDED_DNS]
    : dns.length > 0
      ? dns
      : host.nameservers.filter((s) => !isLoopback(s));
  const options = embedded
    ? [...host.options.filter((o) => !o.startsWith("ndots:")), "ndots:0"]
    : host.options;
  const lines = servers.map((s) => `nameserver ${s}`);
  if (host.search.length > 0) lines.push(`search ${host.search.join(" ")}`);
  if (options.length > 0) lines.push(`options ${options.join(" ")}`);
  return `${lines.join("\n")}\n`;
}
