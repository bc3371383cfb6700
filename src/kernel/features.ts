/**
 * What the running kernel and machine support, found by trying each feature for real in a
 * throwaway network namespace (reading the kernel config would miss modules and tell nothing
 * about tools). Backs `ctnet check-config`, and lets drivers name the missing kernel option.
 */
import { execFile, spawnSync } from "node:child_process";
import { closeSync, constants, existsSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createNetns, deleteNetns, withNetns } from "./netns.js";
import { runNft } from "./nft.js";

export interface Feature {
  name: string;
  category: "kernel" | "tool";
  present: boolean;
  detail: string;
  neededFor: string;
}

interface Outcome {
  ok: boolean;
  message: string;
}

const execFileAsync = promisify(execFile);

function firstLine(text: string): string {
  return text.trim().split("\n")[0] ?? "";
}

/** A child forked while the thread is switched starts in that namespace, so no nsenter is needed. */
function ipIn(ns: string, args: string[]): Outcome {
  const child = withNetns(ns, () => spawnSync("ip", args, { encoding: "utf8", timeout: 10_000 }));
  if (child.error) return { ok: false, message: child.error.message };
  return { ok: child.status === 0, message: child.stderr.trim().replaceAll("\n", "; ") };
}

function nftIn(ns: string, text: string): Outcome {
  try {
    runNft(text, ns);
    return { ok: true, message: "" };
  } catch (err) {
    return { ok: false, message: firstLine((err as Error).message) };
  }
}

function kernel(name: string, option: string, neededFor: string, outcome: Outcome, how: string): Feature {
  const detail = outcome.ok ? how : `${option} missing or not loadable (${outcome.message || "no detail"})`;
  return { name, category: "kernel", present: outcome.ok, detail, neededFor };
}

interface LinkProbe {
  name: string;
  option: string;
  neededFor: string;
  /** Arguments after `ip link add NAME`; PARENT is replaced by a link made by an earlier probe. */
  args: string[];
  /** The link can serve as PARENT for later probes. */
  parent?: boolean;
}

const LINK_PROBES: LinkProbe[] = [
  {
    name: "veth",
    option: "CONFIG_VETH",
    neededFor: "endpoints of bridge and overlay networks",
    args: ["type", "veth", "peer", "name", "probe-peer"],
    parent: true,
  },
  {
    name: "bridge",
    option: "CONFIG_BRIDGE",
    neededFor: "bridge networks (and the private parent of macvlan/ipvlan networks without -o parent)",
    args: ["type", "bridge"],
    parent: true,
  },
  {
    name: "vxlan",
    option: "CONFIG_VXLAN",
    neededFor: "overlay networks",
    args: ["type", "vxlan", "id", "42", "dstport", "4789"],
  },
  {
    name: "macvlan",
    option: "CONFIG_MACVLAN",
    neededFor: "macvlan networks",
    args: ["link", "PARENT", "type", "macvlan", "mode", "bridge"],
  },
  {
    name: "ipvlan",
    option: "CONFIG_IPVLAN",
    neededFor: "ipvlan networks",
    args: ["link", "PARENT", "type", "ipvlan", "mode", "l2"],
  },
  {
    name: "8021q",
    option: "CONFIG_VLAN_8021Q",
    neededFor: "VLAN sub-interfaces as macvlan/ipvlan parents (-o parent=eth0.10)",
    args: ["link", "PARENT", "type", "vlan", "id", "10"],
  },
  {
    name: "dummy",
    option: "CONFIG_DUMMY",
    neededFor: "nothing (optional; macvlan/ipvlan networks without a parent use a private bridge instead)",
    args: ["type", "dummy"],
  },
  {
    name: "geneve",
    option: "CONFIG_GENEVE",
    neededFor: "GENEVE tunnels (optional; overlays use VXLAN)",
    // The link is never set up, so the documentation-range remote sees no traffic.
    args: ["type", "geneve", "id", "42", "remote", "192.0.2.1"],
  },
  {
    name: "wireguard",
    option: "CONFIG_WIREGUARD",
    neededFor: "WireGuard-encrypted overlays (optional)",
    args: ["type", "wireguard"],
  },
];

function probeLinks(ns: string): Feature[] {
  let parent: string | undefined;
  return LINK_PROBES.map((probe, i) => {
    const link = `probe${i}`;
    const needsParent = probe.args.includes("PARENT");
    if (needsParent && parent === undefined) {
      return kernel(
        probe.name,
        probe.option,
        probe.neededFor,
        {
          ok: false,
          message: "not probed: no veth or bridge to use as parent",
        },
        "",
      );
    }
    const args = probe.args.map((a) => (a === "PARENT" ? (parent as string) : a));
    const outcome = ipIn(ns, ["link", "add", link, ...args]);
    if (outcome.ok && probe.parent && parent === undefined) parent = link;
    return kernel(probe.name, probe.option, probe.neededFor, outcome, `ip link add type ${probe.name} works`);
  });
}

function probeNftables(ns: string): Feature[] {
  const filter =
    "add table inet ctnet_probe\n" +
    "add chain inet ctnet_probe probe_forward { type filter hook forward priority 0; }\n";
  const nat =
    "add table ip ctnet_probe_nat\n" +
    "add chain ip ctnet_probe_nat pre { type nat hook prerouting priority -100; }\n" +
    "add chain ip ctnet_probe_nat post { type nat hook postrouting priority 100; }\n";
  const backends = "{ 0 : 10.255.0.1, 1 : 10.255.0.2 }";
  const probes: [string, string, string, string][] = [
    ["nf_tables", "CONFIG_NF_TABLES", "firewall: isolation and filtering", filter],
    [
      "nft_ct",
      "CONFIG_NFT_CT",
      "stateful filtering (ct state)",
      `${filter}add rule inet ctnet_probe probe_forward ct state established,related accept\n`,
    ],
    [
      "nft_nat",
      "CONFIG_NFT_NAT",
      "port publishing (DNAT)",
      `${nat}add rule ip ctnet_probe_nat pre tcp dport 80 dnat to 10.255.0.1:8080\n`,
    ],
    [
      "nft_masq",
      "CONFIG_NFT_MASQ",
      "outbound NAT of containers (masquerade)",
      `${nat}add rule ip ctnet_probe_nat post masquerade\n`,
    ],
    [
      "nft_numgen",
      "CONFIG_NFT_NUMGEN",
      "service load balancing (round robin)",
      `${nat}add rule ip ctnet_probe_nat pre dnat to numgen inc mod 2 map ${backends}\n`,
    ],
    [
      "nft_hash",
      "CONFIG_NFT_HASH",
      "service load balancing (jhash, sticky per client)",
      `${nat}add rule ip ctnet_probe_nat pre dnat to jhash ip saddr mod 2 map ${backends}\n`,
    ],
  ];
  return probes.map(([name, option, neededFor, text]) =>
    kernel(name, option, neededFor, nftIn(ns, text), "nftables ruleset loads"),
  );
}

function probeOthers(ns: string): Feature[] {
  const features: Feature[] = [];

  // Looking up the generic netlink family also autoloads ip_vs where it is a module.
  const genl = withNetns(ns, () =>
    spawnSync("genl", ["ctrl", "get", "name", "IPVS"], { encoding: "utf8", timeout: 10_000 }),
  );
  const ipvs: Outcome = genl.error
    ? { ok: existsSync("/proc/net/ip_vs"), message: "genl not found and /proc/net/ip_vs absent" }
    : { ok: genl.status === 0, message: firstLine(genl.stderr) || "IPVS netlink family not found" };
  features.push(
    kernel(
      "ipvs",
      "CONFIG_IP_VS",
      "IPVS load balancing (optional; ctnet balances with nftables maps)",
      ipvs,
      "IPVS netlink family present",
    ),
  );

  const brnf = withNetns(ns, () => existsSync("/proc/sys/net/bridge/bridge-nf-call-iptables"));
  features.push(
    kernel(
      "br_netfilter",
      "CONFIG_BRIDGE_NETFILTER",
      "netfilter on bridged traffic (optional; not needed by ctnet)",
      { ok: brnf, message: "/proc/sys/net/bridge absent (module not loaded?)" },
      "/proc/sys/net/bridge present",
    ),
  );

  const xfrm = ipIn(ns, [
    "xfrm",
    "policy",
    "add",
    "src",
    "192.0.2.1/32",
    "dst",
    "192.0.2.2/32",
    "dir",
    "out",
  ]);
  features.push(
    kernel("xfrm", "CONFIG_XFRM_USER", "encrypted overlays (IPsec policies)", xfrm, "xfrm policy add works"),
  );

  const esp = ipIn(ns, [
    "xfrm",
    "state",
    "add",
    "src",
    "192.0.2.1",
    "dst",
    "192.0.2.2",
    "proto",
    "esp",
    "spi",
    "0x100",
    "mode",
    "transport",
    "enc",
    "cbc(aes)",
    "0x000102030405060708090a0b0c0d0e0f",
    "auth",
    "hmac(sha256)",
    "0x000102030405060708090a0b0c0d0e0f",
  ]);
  features.push(
    kernel("esp", "CONFIG_INET_ESP", "encrypted overlays (IPsec ESP)", esp, "xfrm ESP state add works"),
  );

  let tun: Outcome;
  try {
    closeSync(openSync("/dev/net/tun", constants.O_RDWR));
    tun = { ok: true, message: "" };
  } catch (err) {
    tun = { ok: false, message: (err as Error).message };
  }
  features.push(kernel("tun", "CONFIG_TUN", "TUN/TAP devices", tun, "/dev/net/tun opens"));
  return features;
}

async function probeKernel(): Promise<Feature[]> {
  const dir = mkdtempSync(join(tmpdir(), "ctnet-probe-"));
  const ns = join(dir, "net");
  try {
    createNetns(ns);
    try {
      return [...probeLinks(ns), ...probeNftables(ns), ...probeOthers(ns)];
    } finally {
      deleteNetns(ns);
    }
  } catch (err) {
    // Without a namespace (not root) nothing can be tried without touching the host.
    const message = `not probed: ${(err as Error).message}`;
    return [kernel("netns", "CONFIG_NET_NS", "sandboxes (network namespaces)", { ok: false, message }, "")];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const TOOLS: [name: string, versionArgs: string[], neededFor: string][] = [
  ["ip", ["-V"], "check-config probes and tests (iproute2)"],
  ["nsenter", ["--version"], "ctnet exec (util-linux)"],
  ["unshare", ["--version"], "starting containers (util-linux)"],
  ["nft", ["--version"], "fallback when the addon lacks libnftables; debugging"],
  ["crun", ["--version"], "OCI runtime (optional)"],
  ["etcd", ["--version"], "multi-host cluster store"],
];

async function probeTool([name, args, neededFor]: (typeof TOOLS)[number]): Promise<Feature> {
  try {
    const { stdout, stderr } = await execFileAsync(name, args, { timeout: 10_000 });
    return { name, category: "tool", present: true, detail: firstLine(stdout || stderr), neededFor };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    const detail = e.code === "ENOENT" ? "not found on PATH" : firstLine(e.stderr ?? "") || e.message;
    return { name, category: "tool", present: false, detail, neededFor };
  }
}

/** Kernel features first, then tools. Needs root for the kernel probes; leaves nothing behind. */
export async function checkConfig(): Promise<Feature[]> {
  const tools = Promise.all(TOOLS.map(probeTool));
  const kernelFeatures = await probeKernel();
  return [...kernelFeatures, ...(await tools)];
}
