/**
 * ctnet's firewall as plain data: what the engine knows about its networks, nothing about nftables.
 * render.ts turns it into the ruleset and its set elements.
 */

export interface FirewallNetwork {
  id: string;
  /** Linux bridge name, e.g. "ctnet0", "br-1a2b3c4d5e6f" */
  bridge: string;
  subnets4: string[];
  subnets6: string[];
  /** reaches nothing outside itself, nothing reaches it */
  internal: boolean;
  /** com.docker.network.bridge.enable_ip_masquerade */
  masquerade: boolean;
  /** com.docker.network.bridge.enable_icc: false blocks container-to-container traffic on the bridge */
  icc: boolean;
  /**
   * Host-side interfaces of the network's endpoints (EndpointRecord.hostIfname), i.e. the bridge's
   * ports. Only networks with icc=false need them: kernels built without CONFIG_NFT_BRIDGE_META
   * (this project's 6.18 among them) reject `meta ibrname`, so the bridge-family chain can only
   * recognise a network's frames by the port they arrive on. Leaving them out on such a network
   * leaves icc=false enforced only where br_netfilter is on.
   */
  ports?: string[];
}

/**
 * One published port as the kernel forwards it: connections to hostIp:hostPort (any local address
 * of the container address's family when hostIp is "", "0.0.0.0" or "::") are DNATed to
 * containerIp:containerPort. A Docker binding to "" on a dual-stack container is two of these, one
 * per family; IPv6 is only forwarded to an IPv6 address (nftables cannot translate families).
 */
export interface FirewallPort {
  proto: "tcp" | "udp";
  hostIp: string;
  hostPort: number;
  containerIp: string;
  containerPort: number;
  /** The bridge of the network containerIp is on: ports of internal networks are never forwarded. */
  bridge: string;
}

export interface FirewallState {
  networks: FirewallNetwork[];
  ports?: FirewallPort[];
}
