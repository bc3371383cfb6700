import type { IncomingMessage, ServerResponse } from "node:http";
import { finished } from "node:stream/promises";
import { InvalidParameterError, NotFoundError } from "../../errors.js";
import { parseReference } from "../../images/reference.js";
import { HOST_ARCH, type ImageRecord, type ImageStore } from "../../images/store.js";
import { applyFilters, parseFilters } from "../filters.js";
import { type ApiRequest, queryBool, type Router, sendEmpty, sendJson } from "../router.js";

const IMAGE_FILTERS = ["before", "dangling", "label", "reference", "since"] as const;
export const NO_REGISTRY =
  "ctnet has no registry access: import an image with `docker import` or `ctnet image import`";

type NamedHandler = (name: string, req: ApiRequest, res: ServerResponse) => Promise<void> | void;

export function imageRoutes(
  router: Router,
  images: ImageStore,
  o: { inUse(id: string): string | undefined },
): void {
  const tests = {
    dangling: (i: ImageRecord, v: string) => (i.repoTags.length === 0) === (v === "true" || v === "1"),
    // Imported images carry no labels (LABEL is not among the supported changes).
    label: () => false,
    reference: (i: ImageRecord, v: string) => i.repoTags.some((t) => matchesReference(v, t)),
    before: (i: ImageRecord, v: string) => Date.parse(i.created) < Date.parse(images.get(v).created),
    since: (i: ImageRecord, v: string) => Date.parse(i.created) > Date.parse(images.get(v).created),
  };

  router.on("GET", "/images/json", (req, res) => {
    const filters = parseFilters(req.query.get("filters"), IMAGE_FILTERS);
    sendJson(res, 200, applyFilters(images.list(), filters, tests).map(imageSummary));
  });

  router.on("POST", "/images/create", async (req, res) => {
    const q = req.query;
    const fromImage = q.get("fromImage");
    // Docker's answer when a repository cannot be pulled is a 404.
    if (fromImage) throw new NotFoundError(`pull access denied for ${familiar(fromImage)}: ${NO_REGISTRY}`);
    const fromSrc = q.get("fromSrc");
    if (fromSrc === null) throw new InvalidParameterError("give fromImage (a pull) or fromSrc (an import)");
    if (fromSrc !== "-")
      throw new InvalidParameterError(
        `ctnet does not download archives (fromSrc=${fromSrc}): send the archive in the request body with fromSrc=-`,
      );
    checkPlatform(q.get("platform"));
    let img: ImageRecord;
    try {
      img = await images.importTar(req.raw, {
        repo: q.get("repo") ?? undefined,
        tag: q.get("tag") ?? undefined,
        message: q.get("message") ?? undefined,
        changes: q.getAll("changes"),
      });
    } catch (err) {
      await drain(req.raw);
      throw err;
    }
    // The progress stream of `docker import`: the last status line is the new image's id.
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(`${JSON.stringify({ status: img.id })}\n`);
  });

  // The router's `:param` stops at a slash, but image names have slashes ("local/busybox"), and
  // the docker CLI sends them unescaped: these routes match the rest of the path and cut the
  // name out themselves.
  const named = (method: string, suffix: string, handler: NamedHandler) => {
    router.on(method, `/images/.+${suffix}`, (req, res) => {
      const path = req.path.replace(/\/$/, "");
      const name = decodeURIComponent(path.slice("/images/".length, path.length - suffix.length));
      return handler(name, req, res);
    });
  };

  named("GET", "/json", (name, _req, res) => {
    const img = images.get(name);
    sendJson(res, 200, imageInspect(img, images.rootfsPath(img)));
  });

  named("POST", "/tag", (name, req, res) => {
    const repo = req.query.get("repo");
    if (!repo) throw new InvalidParameterError("repository name (repo) is required");
    images.tag(name, repo, req.query.get("tag") ?? undefined);
    sendEmpty(res, 201);
  });

  named("DELETE", "", (name, req, res) => {
    sendJson(
      res,
      200,
      images.remove(name, queryBool(req.query, "force"), (id) => o.inUse(id)),
    );
  });
}

function imageSummary(i: ImageRecord) {
  return {
    Id: i.id,
    ParentId: "",
    RepoTags: i.repoTags,
    RepoDigests: [],
    Created: Math.floor(Date.parse(i.created) / 1000),
    Size: i.size,
    SharedSize: -1,
    Labels: {},
    // Docker counts containers only when asked to; -1 says "not computed".
    Containers: -1,
  };
}

function imageInspect(i: ImageRecord, rootfs: string) {
  return {
    Id: i.id,
    RepoTags: i.repoTags,
    RepoDigests: [],
    Parent: "",
    Comment: i.comment,
    Created: i.created,
    Author: "",
    Config: {
      User: "",
      ExposedPorts: null,
      Env: i.config.Env,
      Cmd: i.config.Cmd,
      Volumes: null,
      WorkingDir: i.config.WorkingDir,
      Entrypoint: i.config.Entrypoint,
      OnBuild: null,
      Labels: null,
    },
    Architecture: i.architecture,
    Os: i.os,
    Size: i.size,
    GraphDriver: { Name: "overlay", Data: { LowerDir: rootfs } },
    RootFS: { Type: "layers", Layers: i.layers },
  };
}

/** Docker's `reference` filter: a glob on the repository (and tag when one is given). */
function matchesReference(pattern: string, repoTag: string): boolean {
  const glob = (p: string) =>
    new RegExp(
      `^${p
        .replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*/g, "[^/]*")
        .replace(/\?/g, "[^/]")}$`,
    );
  const colon = repoTag.lastIndexOf(":");
  const repo = repoTag.slice(0, colon);
  if (pattern.lastIndexOf(":") > pattern.lastIndexOf("/")) return glob(pattern).test(repoTag);
  return glob(pattern).test(repo);
}

/** The CLI asks for docker.io/library/busybox when the user typed busybox. */
function familiar(name: string): string {
  try {
    return parseReference(name).name;
  } catch {
    return name;
  }
}

/** An imported tree only runs on this machine's platform, so no other can be asked for. */
function checkPlatform(platform: string | null): void {
  if (!platform) return;
  const [os, arch] = platform.toLowerCase().split("/");
  if (os !== "linux" || (arch && arch !== HOST_ARCH))
    throw new InvalidParameterError(`ctnet imports images for linux/${HOST_ARCH} only, not ${platform}`);
}

/** Reads what is left of a failed upload, so that the client, still sending, gets the error answer. */
async function drain(raw: IncomingMessage): Promise<void> {
  if (raw.readableEnded || raw.destroyed) return;
  raw.resume();
  await finished(raw).catch(() => undefined);
}
