import { InvalidParameterError } from "../errors.js";

/**
 * Image references the way Docker's distribution/reference package reads them, kept in Docker's
 * "familiar" form: `busybox:latest` (not `docker.io/library/busybox:latest`), `local/busybox:v1`,
 * `localhost/x:latest`, `registry.example:5000/team/app:1.0`.
 */
export interface Reference {
  /** repository name, familiar form */
  name: string;
  tag: string;
}

export const DEFAULT_TAG = "latest";

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const MAX_NAME = 255;
/** A full image id, with or without its algorithm. */
export const IMAGE_ID = /^(?:sha256:)?([0-9a-f]{64})$/;
/** What may be a prefix of an image id ("3e2f21a8", "sha256:3e2f"). */
export const ID_PREFIX = /^(?:sha256:)?([0-9a-f]+)$/;

/**
 * Parses `name[:tag]`; the tag defaults to `latest`. Digests are refused: images made by import
 * have no registry digest to refer to.
 */
export function parseReference(ref: string): Reference {
  const { name, tag = DEFAULT_TAG } = split(ref);
  if (!TAG.test(tag)) throw new InvalidParameterError(`invalid reference format: invalid tag in ${ref}`);
  return { name: familiarName(name, ref), tag };
}

/**
 * The `repo` and `tag` query parameters of import and tag: the repository may carry the tag
 * itself (`docker import x.tar local/busybox:v1`), but not twice.
 */
export function repoTagReference(repo: string, tag?: string | null): Reference {
  if (!tag) return parseReference(repo);
  if (split(repo).tag !== undefined)
    throw new InvalidParameterError(`invalid reference ${repo}: the tag is given twice (${tag})`);
  return parseReference(`${repo}:${tag}`);
}

function split(ref: string): { name: string; tag?: string } {
  if (ref.includes("@"))
    throw new InvalidParameterError(
      `invalid reference ${ref}: ctnet images have no digests; use NAME[:TAG] or the image id`,
    );
  // A colon before the last slash belongs to a registry's port (localhost:5000/app).
  const colon = ref.lastIndexOf(":");
  if (colon <= ref.lastIndexOf("/")) return { name: ref };
  return { name: ref.slice(0, colon), tag: ref.slice(colon + 1) };
}

export const formatReference = (r: Reference) => `${r.name}:${r.tag}`;

function familiarName(name: string, ref: string): string {
  if (IMAGE_ID.test(name))
    throw new InvalidParameterError(
      `invalid repository name (${name}), cannot specify 64-byte hexadecimal strings`,
    );
  if (name.length === 0 || name.length > MAX_NAME)
    throw new InvalidParameterError(`invalid reference format: ${ref}`);
  const parts = name.split("/");
  // Docker's rule: the first part names a registry if it has a dot or a port, or is localhost.
  const first = parts[0] as string;
  let domain: string | undefined;
  if (parts.length > 1 && (/[.:]/.test(first) || first === "localhost" || first !== first.toLowerCase())) {
    if (!DOMAIN.test(first)) throw new InvalidParameterError(`invalid reference format: ${ref}`);
    domain = first;
    parts.shift();
  }
  for (const p of parts) {
    if (COMPONENT.test(p)) continue;
    if (COMPONENT.test(p.toLowerCase()))
      throw new InvalidParameterError(
        `invalid reference format: repository name (${parts.join("/")}) must be lowercase`,
      );
    throw new InvalidParameterError(`invalid reference format: ${ref}`);
  }
  // docker.io/library/busybox, docker.io/busybox and busybox are one repository.
  if (domain === "docker.io" || domain === "index.docker.io") {
    if (parts.length === 2 && parts[0] === "library") parts.shift();
    domain = undefined;
  } else if (domain === undefined && parts.length === 2 && parts[0] === "library") {
    parts.shift();
  }
  return domain === undefined ? parts.join("/") : `${domain}/${parts.join("/")}`;
}
