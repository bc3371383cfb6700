/**
 * Image references as the docker CLI checks them before sending (distribution/reference's
 * ParseNormalizedNamed and ParseAnyReference), with docker's error messages, so that a bad name
 * fails the same way and a good one reaches the daemon in docker's "familiar" form.
 */
import { UsageError } from "./errors.js";

export interface ImageReference {
  /** Familiar repository name: `busybox`, not `docker.io/library/busybox`. */
  name: string;
  tag?: string;
  digest?: string;
}

const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const TAG = "[\\w][\\w.-]{0,127}";
const DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
const REFERENCE = new RegExp(
  `^((?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*)(?::(${TAG}))?(?:@(${DIGEST}))?$`,
);
const IMAGE_ID = /^[a-f0-9]{64}$/;
const NAME_TOTAL_LENGTH_MAX = 255;
const DEFAULT_DOMAIN = "docker.io";

/** docker's splitDockerDomain: the first part is a registry if it has a dot or port, or is localhost. */
function splitDomain(ref: string): [string, string] {
  const slash = ref.indexOf("/");
  const first = ref.slice(0, slash);
  let domain: string;
  let rest: string;
  if (slash === -1 || (!/[.:]/.test(first) && first !== "localhost" && first.toLowerCase() === first)) {
    domain = DEFAULT_DOMAIN;
    rest = ref;
  } else {
    domain = first === "index.docker.io" ? DEFAULT_DOMAIN : first;
    rest = ref.slice(slash + 1);
  }
  if (domain === DEFAULT_DOMAIN && !rest.includes("/")) rest = `library/${rest}`;
  return [domain, rest];
}

/** `NAME[:TAG][@DIGEST]`, normalised as docker does (ParseNormalizedNamed). */
export function parseImageReference(ref: string): ImageReference {
  if (IMAGE_ID.test(ref)) {
    throw new UsageError(`invalid repository name (${ref}), cannot specify 64-byte hexadecimal strings`);
  }
  const [domain, rest] = splitDomain(ref);
  const colon = rest.indexOf(":");
  const remote = colon === -1 ? rest : rest.slice(0, colon);
  if (remote.toLowerCase() !== remote) {
    throw new UsageError(`invalid reference format: repository name (${remote}) must be lowercase`);
  }
  const m = REFERENCE.exec(`${domain}/${rest}`);
  if (!m) {
    if (ref === "")
      throw new UsageError("invalid reference format: repository name must have at least one component");
    throw new UsageError("invalid reference format");
  }
  const full = m[1] as string;
  if (full.length > NAME_TOTAL_LENGTH_MAX) {
    throw new UsageError(
      `invalid reference format: repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`,
    );
  }
  let name = full;
  if (name.startsWith(`${DEFAULT_DOMAIN}/`)) {
    name = name.slice(DEFAULT_DOMAIN.length + 1);
    if (/^library\/[^/]+$/.test(name)) name = name.slice("library/".length);
  }
  return { name, ...(m[2] ? { tag: m[2] } : {}), ...(m[3] ? { digest: m[3] } : {}) };
}

/** docker's ParseAnyReference: an image id (full, with or without `sha256:`) or a reference. */
export function isImageId(ref: string): boolean {
  return IMAGE_ID.test(ref) || /^sha256:[a-f0-9]{64}$/.test(ref);
}

/** Whether `word` could name an image at all (a command path such as `/bin/sh` cannot). */
export function looksLikeImage(word: string): boolean {
  if (isImageId(word)) return true;
  try {
    parseImageReference(word);
    return true;
  } catch {
    return false;
  }
}

function parseForTag(ref: string): ImageReference {
  try {
    return parseImageReference(ref);
  } catch (err) {
    throw new UsageError(
      `Error parsing reference: "${ref}" is not a valid repository/tag: ${(err as Error).message}`,
    );
  }
}

/**
 * The `repo` and `tag` of POST /images/{name}/tag for `docker tag`'s TARGET: `latest` when no tag
 * is given, and never a digest.
 */
export function tagTarget(target: string): { repo: string; tag: string } {
  const ref = parseForTag(target);
  if (ref.digest) throw new UsageError("refusing to create a tag with a digest reference");
  return { repo: ref.name, tag: ref.tag ?? "latest" };
}

/** `docker tag`'s check of SOURCE, which may also be an image id. */
export function checkTagSource(source: string): void {
  if (!isImageId(source)) parseForTag(source);
}
