/** The cluster store's key space. Everything ctnet writes to etcd lives under PREFIX. */
export const PREFIX = "/ctnet/";
export const HOSTS = `${PREFIX}hosts/`;
export const MEMBERS = `${PREFIX}members/`;
export const NETWORKS = `${PREFIX}networks/`;
export const ENDPOINTS = `${PREFIX}endpoints/`;
export const ADDRESSES = `${PREFIX}addresses/`;
export const REGISTRY = `${PREFIX}registry`;
export const SERVICES = `${PREFIX}services/`;
/** service name → id, created with the service so that a name is taken once cluster-wide */
export const SERVICE_NAMES = `${PREFIX}service-names/`;
/** "<proto>/<port>" → service id: a routing-mesh port, taken once cluster-wide */
export const SERVICE_PORTS = `${PREFIX}service-ports/`;
export const TASKS = `${PREFIX}tasks/`;
export const TASK_STATUS = `${PREFIX}task-status/`;
/** held, on its lease, by the host that runs the scheduler */
export const LEADER = `${PREFIX}leader`;

export const hostKey = (name: string) => `${HOSTS}${name}`;
export const memberKey = (name: string) => `${MEMBERS}${name}`;
export const networkKey = (id: string) => `${NETWORKS}${id}`;
export const endpointKey = (networkId: string, id: string) => `${ENDPOINTS}${networkId}/${id}`;
export const serviceKey = (id: string) => `${SERVICES}${id}`;
export const serviceNameKey = (name: string) => `${SERVICE_NAMES}${name}`;
export const servicePortKey = (protocol: string, port: number) => `${SERVICE_PORTS}${protocol}/${port}`;
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
