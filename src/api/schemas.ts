import { z } from "zod";
import type { ContainerCreateRequest, EndpointRequest } from "../engine/containers.js";
import type { NetworkCreateRequest } from "../engine/networks.js";
import { InvalidParameterError } from "../errors.js";

/**
 * Request bodies of the Docker Engine API, as ctnet accepts them. Fields ctnet does not know are
 * let through (Docker clients send many zero-valued fields), but a field ctnet knows and cannot
 * honour yet is refused with a clear message instead of being ignored.
 */

export const stringMap = z
  .record(z.string(), z.string())
  .nullish()
  .transform((v) => v ?? {});
export const stringList = z
  .array(z.string())
  .nullish()
  .transform((v) => v ?? []);

const ipamConfig = z.looseObject({
  Subnet: z.string().optional(),
  IPRange: z.string().optional(),
  Gateway: z.string().optional(),
  AuxiliaryAddresses: stringMap,
});

export const networkCreateSchema = z.looseObject({
  Name: z.string({ error: "network name is required" }).min(1, "network name is required"),
  Driver: z.string().optional().default("bridge"),
  Scope: z.string().optional(),
  Internal: z.boolean().optional().default(false),
  Attachable: z.boolean().optional().default(false),
  Ingress: z.boolean().optional().default(false),
  ConfigOnly: z.boolean().optional().default(false),
  ConfigFrom: z.looseObject({ Network: z.string().optional() }).nullish(),
  EnableIPv4: z.boolean().nullish(),
  EnableIPv6: z.boolean().nullish(),
  Options: stringMap,
  Labels: stringMap,
  IPAM: z
    .looseObject({
      Driver: z.string().optional(),
      Config: z.array(ipamConfig).nullish(),
      Options: stringMap,
    })
    .nullish(),
});

export function toNetworkCreate(body: unknown): NetworkCreateRequest {
  const b = parse(networkCreateSchema, body);
  if (b.Ingress) throw new InvalidParameterError("ingress networks are not supported yet");
  if (b.ConfigOnly || b.ConfigFrom?.Network)
    throw new InvalidParameterError("config-only networks are not supported");
  if (b.Scope && b.Scope !== "local")
    throw new InvalidParameterError(`scope ${b.Scope} is not supported on a single host`);
  return {
    name: b.Name,
    driver: b.Driver || "bridge",
    internal: b.Internal,
    attachable: b.Attachable,
    enableIPv4: b.EnableIPv4 ?? true,
    enableIPv6: b.EnableIPv6 ?? false,
    options: b.Options,
    labels: b.Labels,
    ipamDriver: b.IPAM?.Driver || "default",
    ipamOptions: b.IPAM?.Options ?? {},
    ipamConfig: (b.IPAM?.Config ?? []).map((c) => ({
      ...(c.Subnet ? { subnet: c.Subnet } : {}),
      ...(c.IPRange ? { ipRange: c.IPRange } : {}),
      ...(c.Gateway ? { gateway: c.Gateway } : {}),
      auxAddresses: c.AuxiliaryAddresses,
    })),
  };
}

const endpointSettings = z
  .looseObject({
    IPAMConfig: z
      .looseObject({ IPv4Address: z.string().optional(), IPv6Address: z.string().optional() })
      .nullish(),
    Aliases: stringList,
    Links: stringList,
    DriverOpts: stringMap,
    MacAddress: z.string().optional(),
  })
  .nullish();

export function toEndpointRequest(e: z.infer<typeof endpointSettings>): EndpointRequest {
  if (e?.Links && e.Links.length > 0)
    throw new InvalidParameterError("legacy container links are not supported");
  if (e?.MacAddress)
    throw new InvalidParameterError("setting a container's MAC address is not supported yet");
  if (e?.DriverOpts && Object.keys(e.DriverOpts).length > 0) {
    throw new InvalidParameterError(
      `unknown endpoint driver options: ${Object.keys(e.DriverOpts).join(", ")}`,
    );
  }
  return {
    ...(e?.IPAMConfig?.IPv4Address ? { ipv4: e.IPAMConfig.IPv4Address } : {}),
    ...(e?.IPAMConfig?.IPv6Address ? { ipv6: e.IPAMConfig.IPv6Address } : {}),
    aliases: e?.Aliases ?? [],
  };
}

export const networkConnectSchema = z.looseObject({
  Container: z.string({ error: "container is required" }).min(1, "container is required"),
  EndpointConfig: endpointSettings,
});

export const clusterInitSchema = z.strictObject({
  AdvertiseAddr: z.string().min(1).optional(),
});

export const clusterJoinSchema = z.strictObject({
  Addr: z.string({ error: "the address of a cluster member is required" }).min(1),
  AdvertiseAddr: z.string().min(1).optional(),
  Member: z.boolean().optional().default(false),
});

export const networkDisconnectSchema = z.looseObject({
  Container: z.string({ error: "container is required" }).min(1, "container is required"),
  Force: z.boolean().optional().default(false),
});

const command = z
  .union([z.array(z.string()), z.string()])
  .nullish()
  .transform((v) => (v === null || v === undefined ? [] : Array.isArray(v) ? v : [v]));

const emptyish = (v: unknown) =>
  v === undefined ||
  v === null ||
  v === "" ||
  v === false ||
  (Array.isArray(v) && v.length === 0) ||
  (typeof v === "object" && v !== null && Object.keys(v).length === 0);

export const containerCreateSchema = z.looseObject({
  Hostname: z.string().optional().default(""),
  Domainname: z.string().optional().default(""),
  User: z.string().optional(),
  Env: stringList,
  Cmd: command,
  Entrypoint: command,
  Image: z.string().optional().default(""),
  Labels: stringMap,
  WorkingDir: z.string().optional(),
  Tty: z.boolean().optional(),
  OpenStdin: z.boolean().optional(),
  StdinOnce: z.boolean().optional(),
  AttachStdin: z.boolean().optional(),
  AttachStdout: z.boolean().optional(),
  AttachStderr: z.boolean().optional(),
  ExposedPorts: z.record(z.string(), z.unknown()).nullish(),
  HostConfig: z
    .looseObject({
      NetworkMode: z.string().optional().default(""),
      Dns: stringList,
      DnsSearch: stringList,
      DnsOptions: stringList,
      AutoRemove: z.boolean().optional().default(false),
      PortBindings: z
        .record(
          z.string(),
          z
            .array(z.looseObject({ HostIp: z.string().optional(), HostPort: z.string().optional() }))
            .nullish(),
        )
        .nullish(),
      PublishAllPorts: z.boolean().optional(),
      Links: stringList,
      ExtraHosts: stringList,
      ConsoleSize: z
        .tuple([z.number().int().min(0).max(0xffff), z.number().int().min(0).max(0xffff)])
        .nullish(),
    })
    .nullish(),
  NetworkingConfig: z
    .looseObject({ EndpointsConfig: z.record(z.string(), endpointSettings).nullish() })
    .nullish(),
});

export function toContainerCreate(body: unknown, name: string | null): ContainerCreateRequest {
  const b = parse(containerCreateSchema, body);
  const h = b.HostConfig;
  const unsupported: [string, unknown][] = [
    ["running as another user (-u)", b.User && b.User !== "root" && b.User !== "0" ? b.User : ""],
    ["legacy links (--link)", h?.Links],
    ["extra hosts (--add-host)", h?.ExtraHosts],
    ["DNS search domains (--dns-search)", h?.DnsSearch],
    ["DNS options (--dns-option)", h?.DnsOptions],
  ];
  for (const [what, value] of unsupported) {
    if (!emptyish(value))
      throw new InvalidParameterError(`${what} is not supported by this version of ctnet`);
  }
  const endpoints: Record<string, EndpointRequest> = {};
  for (const [ref, e] of Object.entries(b.NetworkingConfig?.EndpointsConfig ?? {}))
    endpoints[ref] = toEndpointRequest(e);
  return {
    ...(name ? { name } : {}),
    image: b.Image,
    cmd: b.Cmd,
    entrypoint: b.Entrypoint,
    entrypointSet: (body as { Entrypoint?: unknown }).Entrypoint != null,
    workingDir: b.WorkingDir ?? "",
    env: b.Env,
    hostname: b.Hostname,
    domainname: b.Domainname,
    labels: b.Labels,
    networkMode: h?.NetworkMode ?? "",
    dns: h?.Dns ?? [],
    autoRemove: h?.AutoRemove ?? false,
    stdio: {
      tty: b.Tty ?? false,
      openStdin: b.OpenStdin ?? false,
      stdinOnce: b.StdinOnce ?? false,
      attachStdin: b.AttachStdin ?? false,
      attachStdout: b.AttachStdout ?? false,
      attachStderr: b.AttachStderr ?? false,
      // A size of 0 is the CLI saying it has no terminal.
      ...(h?.ConsoleSize && h.ConsoleSize[0] > 0 && h.ConsoleSize[1] > 0
        ? { consoleSize: [h.ConsoleSize[0], h.ConsoleSize[1]] as [number, number] }
        : {}),
    },
    endpoints,
    exposedPorts: b.ExposedPorts ?? {},
    portBindings: h?.PortBindings ?? {},
    publishAll: h?.PublishAllPorts ?? false,
  };
}

/** Parses with a schema; a failure becomes a 400 that names the field. */
export function parse<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue?.path.length ? `${issue.path.join(".")}: ` : "";
  throw new InvalidParameterError(`invalid request: ${where}${issue?.message ?? "malformed body"}`);
}
