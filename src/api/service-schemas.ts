/**
 * Docker's ServiceSpec as ctnet accepts it. The docker CLI sends many zero-valued fields (`Init:
 * false`, `Resources: {Limits: {}}`, `ForceUpdate: 0`), which pass; any other field with a value
 * outside what ctnet's services do is refused by name rather than ignored.
 */
import { z } from "zod";
import type { ServicePort } from "../cluster/types.js";
import type { ServiceSpec } from "../engine/services.js";
import { InvalidParameterError, NotSupportedError } from "../errors.js";
import { parse, stringList, stringMap } from "./schemas.js";

const networkAttachment = z.looseObject({ Target: z.string().min(1, "a network's Target is required") });

const portConfig = z.looseObject({
  Protocol: z
    .enum(["tcp", "udp", "sctp"])
    .nullish()
    .transform((v) => v ?? "tcp"),
  TargetPort: z.number().int(),
  PublishedPort: z
    .number()
    .int()
    .nullish()
    .transform((v) => v ?? 0),
  PublishMode: z
    .enum(["ingress", "host"])
    .nullish()
    .transform((v) => v ?? "ingress"),
});

export const serviceSpecSchema = z.looseObject({
  Name: z
    .string()
    .nullish()
    .transform((v) => v ?? ""),
  Labels: stringMap,
  TaskTemplate: z
    .looseObject({
      ContainerSpec: z
        .looseObject({
          Image: z
            .string()
            .nullish()
            .transform((v) => v ?? ""),
          Command: z.array(z.string()).nullish(),
          Args: stringList,
          Env: stringList,
        })
        .nullish(),
      Networks: z.array(networkAttachment).nullish(),
    })
    .nullish(),
  Mode: z
    .looseObject({
      Replicated: z.looseObject({ Replicas: z.number().int().min(0).nullish() }).nullish(),
    })
    .nullish(),
  Networks: z.array(networkAttachment).nullish(),
  EndpointSpec: z
    .looseObject({
      Mode: z
        .enum(["vip", "dnsrr"])
        .nullish()
        .transform((v) => v ?? "vip"),
      Ports: z.array(portConfig).nullish(),
    })
    .nullish(),
});

/** The parts of a ServiceSpec ctnet honours; `true` takes any value, an array describes its items. */
type Shape = true | [Shape] | { [key: string]: Shape };

const PORT: Shape = { Protocol: true, TargetPort: true, PublishedPort: true, PublishMode: true };
const SUPPORTED: Shape = {
  Name: true,
  Labels: true,
  TaskTemplate: {
    ContainerSpec: { Image: true, Command: true, Args: true, Env: true },
    Networks: [{ Target: true }],
  },
  Mode: { Replicated: { Replicas: true } },
  Networks: [{ Target: true }],
  EndpointSpec: { Mode: true, Ports: [PORT] },
};

/** Zero values in Go's sense, all the way down: what a client sends for an option it did not set. */
function isZero(v: unknown): boolean {
  if (v === undefined || v === null || v === "" || v === false || v === 0) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === "object") return Object.values(v as object).every(isZero);
  return false;
}

/** The path of the first field inside `v` that has a value: the option the client actually set. */
function firstValue(v: unknown, path: string): string {
  if (v === null || typeof v !== "object") return path;
  for (const [key, inner] of Object.entries(v)) {
    if (!isZero(inner)) return firstValue(inner, Array.isArray(v) ? `${path}[${key}]` : `${path}.${key}`);
  }
  return path;
}

/** The path of the first field with a value outside `shape`, if any. */
function unsupportedField(value: unknown, shape: Shape, path: string): string | undefined {
  if (shape === true || value === null || typeof value !== "object") return undefined;
  if (Array.isArray(shape)) {
    if (!Array.isArray(value)) return undefined;
    for (const [i, item] of value.entries()) {
      const found = unsupportedField(item, shape[0], `${path}[${i}]`);
      if (found) return found;
    }
    return undefined;
  }
  for (const [key, v] of Object.entries(value)) {
    const where = path ? `${path}.${key}` : key;
    const sub = shape[key];
    if (sub === undefined) {
      if (!isZero(v)) return firstValue(v, where);
      continue;
    }
    const found = unsupportedField(v, sub, where);
    if (found) return found;
  }
  return undefined;
}

export function toServiceSpec(body: unknown): ServiceSpec {
  const b = parse(serviceSpecSchema, body);
  const mode = (body as { Mode?: Record<string, unknown> } | null)?.Mode ?? {};
  for (const other of ["Global", "ReplicatedJob", "GlobalJob"]) {
    if (mode[other] !== undefined && mode[other] !== null)
      throw new NotSupportedError(`${other} services are not supported by ctnet: only replicated ones`);
  }
  const field = unsupportedField(body, SUPPORTED, "");
  if (field) throw new NotSupportedError(`the service option ${field} is not supported by ctnet`);
  const attachments = b.TaskTemplate?.Networks ?? b.Networks ?? [];
  const ports: ServicePort[] = (b.EndpointSpec?.Ports ?? []).map((p) => {
    if (p.Protocol === "sctp")
      throw new NotSupportedError("sctp ports are not supported by ctnet's services");
    return { mode: p.PublishMode, protocol: p.Protocol, published: p.PublishedPort, target: p.TargetPort };
  });
  const spec = b.TaskTemplate?.ContainerSpec;
  const entrypoint = spec?.Command ?? [];
  return {
    name: b.Name,
    image: spec?.Image ?? "",
    ...(entrypoint.length > 0 ? { entrypoint } : {}),
    cmd: spec?.Args ?? [],
    env: spec?.Env ?? [],
    labels: b.Labels,
    replicas: b.Mode?.Replicated?.Replicas ?? 1,
    networks: attachments.map((n) => n.Target),
    endpointMode: b.EndpointSpec?.Mode ?? "vip",
    ports,
  };
}

/** The `version` query parameter of an update: the service's version the client read. */
export function updateVersion(raw: string | null): number {
  const v = Number(raw);
  if (raw === null || raw === "" || !Number.isSafeInteger(v) || v < 0)
    throw new InvalidParameterError(
      `invalid version ${JSON.stringify(raw ?? "")}: the service's Version.Index is required`,
    );
  return v;
}
