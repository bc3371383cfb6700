/** The cluster store's key space. Everything ctnet writes to etcd lives under PREFIX. */
export const PREFIX = "/ctnet/";
export const HOSTS = `${PREFIX}hosts/`;
export const MEMBERS = `${PREFIX}members/`;
export const NETWORKS = `${PREFIX}networks/`;
export const ENDPOINTS = `${PREFIX}endpoints/`;
export const ADDRESSES = `${PREFIX}addresses/`;
export const REGISTRY = `${PREFIX}registry`;
export const SERVICES = `${PREFIX}services/`;
export const TASKS = `${PREFIX}tasks/`;
export const TASK_STATUS = `${PREFIX}task-status/`;
/** held, on its lease, by the host that runs the scheduler */
export const LEADER = `${PREFIX}leader`;

export const hostKey = (name: string) => `${HOSTS}${name}`;
export const memberKey = (name: string) => `${MEMBERS}${name}`;
export const networkKey = (id: string) => `${NETWORKS}${id}`;
export const endpointKey = (networkId: string, id: string) => `${ENDPOINTS}${networkId}/${id}`;
export const serviceKey = (id: string) => `${SERVICES}${id}`;
export const taskKey = (id: string) => `${TASKS}${id}`;
export const taskStatusKey = (id: string) => `${TASK_STATUS}${id}`;
export const addressKey = (networkId: string, address: string) => `${ADDRESSES}${networkId}/${address}`;

/** "/ctnet/addresses/<net>/<ip>" → [net, ip] */
export function splitAddressKey(key: string): [string, string] | undefined {
  if (!key.startsWith(ADDRESSES)) return undefined;
  const rest = key.slice(ADDRESSES.length);
  const slash = rest.indexOf("/");
  if (slash <= 0) return undefined;
  return [rest.slice(0, slash), rest.slice(slash + 1)];
}
