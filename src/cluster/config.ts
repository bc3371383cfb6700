import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../atomic-file.js";
import { SystemError } from "../errors.js";

/** How this host belongs to a cluster; kept in the data root so a restarted daemon rejoins by itself. */
export interface ClusterConfig {
  nodeName: string;
  advertiseAddr: string;
  /** etcd client URLs, e.g. http://100.64.1.1:2379 */
  endpoints: string[];
  /** set when ctnet runs an etcd member on this host */
  member?: EtcdMemberSpec;
}

export interface EtcdMemberSpec {
  name: string;
  clientUrl: string;
  peerUrl: string;
  /** etcd's --initial-cluster: name=peerUrl,… as it stood when this member joined */
  initialCluster: string;
  initialState: "new" | "existing";
}

const file = (dataRoot: string) => join(dataRoot, "cluster.json");

export function loadClusterConfig(dataRoot: string): ClusterConfig | undefined {
  let text: string;
  try {
    text = readFileSync(file(dataRoot), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as ClusterConfig;
  } catch (err) {
    throw new SystemError(`cluster configuration ${file(dataRoot)} is unreadable: ${(err as Error).message}`);
  }
}

export function saveClusterConfig(dataRoot: string, cfg: ClusterConfig): void {
  writeFileAtomic(file(dataRoot), JSON.stringify(cfg, null, 2));
}

export function removeClusterConfig(dataRoot: string): void {
  rmSync(file(dataRoot), { force: true });
}
