/** Port publishing (`run -p`) as plain data, shared by the parser, the allocator and the engine. */

export type PortProto = "tcp" | "udp";

/** A published port as given out: one host port, forwarded to one container port. */
export interface PortBinding {
  proto: PortProto;
  /**
   * "" = every address of the host, IPv4 and IPv6 (Docker's default); "0.0.0.0" or "::" = every
   * address of that family only; anything else = that one address, in canonical form.
   */
  hostIp: string;
  hostPort: number;
  containerPort: number;
}

/**
 * What a container asked for, validated: a fixed host port (start === end), a range to pick a free
 * port from, or 0-0 for an ephemeral port from the kernel's ip_local_port_range.
 */
export interface PortBindingRequest {
  proto: PortProto;
  hostIp: string;
  hostPortStart: number;
  hostPortEnd: number;
  containerPort: number;
}
