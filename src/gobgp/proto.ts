/**
 * The gobgpd API schema, read from the .proto files Debian ships with golang-github-osrg-gobgp-dev,
 * so the client always speaks the exact API of the installed gobgpd (3.10) and no generated code
 * has to be kept in step with it.
 *
 * The files are parsed once, by protobufjs. The same parsed root serves twice: @grpc/proto-loader
 * builds the gRPC service from it, and its message types encode and decode the values gobgpd wraps
 * in google.protobuf.Any (NLRI and path attributes), which proto-loader cannot build.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { RacklbError } from '../errors.js';

export const DEFAULT_PROTO_DIR = '/usr/share/gocode/src/github.com/osrg/gobgp/api';
const PROTO_FILES = ['gobgp.proto', 'attribute.proto', 'capability.proto'] as const;
const DEBIAN_PACKAGE = 'golang-github-osrg-gobgp-dev';
const TYPE_URL_PREFIX = 'type.googleapis.com/apipb.';

/** How gobgpd's messages look on our side of proto-loader; see `loadGobgpProto`. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  // uint64 counters and timers stay far below 2^53; numbers spare every caller a Long.
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** An Any as proto-loader passes it in both directions (no `json` option, so no `@type` unpacking). */
export interface AnyValue {
  type_url: string;
  value: Buffer;
}

export interface GobgpProto {
  /** Constructor of the GobgpApi service client. */
  GobgpApi: grpc.ServiceClientConstructor;
  /** The service definition, for a fake server in tests. */
  service: grpc.ServiceDefinition;
  types: {
    IPAddressPrefix: protobuf.Type;
    OriginAttribute: protobuf.Type;
    NextHopAttribute: protobuf.Type;
    MpReachNLRIAttribute: protobuf.Type;
  };
  /** Wraps a message of one of `types` into an Any. */
  pack(type: protobuf.Type, fields: Record<string, unknown>): AnyValue;
  typeUrl(type: protobuf.Type): string;
  dir: string;
}

let cached: { dir: string; proto: GobgpProto } | undefined;

export function protoDir(): string {
  return process.env.RACKLB_GOBGP_PROTO_DIR || DEFAULT_PROTO_DIR;
}

/** Parses the schema on first use; later calls return the same object (parsing takes ~80 ms). */
export function loadGobgpProto(dir: string = protoDir()): GobgpProto {
  if (cached !== undefined && cached.dir === dir) return cached.proto;
  const missing = PROTO_FILES.filter((f) => !existsSync(path.join(dir, f)));
  if (missing.length > 0) {
    throw new RacklbError(
      'RACKLB_GOBGP',
      `gobgpd API schema not found: ${missing.join(', ')} missing in ${dir}; install the Debian package ${DEBIAN_PACKAGE} ` +
        `(apt-get install ${DEBIAN_PACKAGE}) or point RACKLB_GOBGP_PROTO_DIR at a directory holding gobgp's api/*.proto`,
    );
  }

  let root: protobuf.Root;
  try {
    root = new protobuf.Root();
    // gobgp.proto imports siblings by bare name; google/protobuf/* are bundled with protobufjs.
    root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : path.join(dir, path.basename(target)));
    root.loadSync(
      PROTO_FILES.map((f) => path.join(dir, f)),
      { keepCase: true },
    );
    root.resolveAll();
  } catch (err) {
    throw new RacklbError('RACKLB_GOBGP', `cannot parse gobgpd API schema in ${dir}: ${(err as Error).message}`, { cause: err });
  }

  const packageDefinition = protoLoader.fromJSON(root.toJSON(), LOADER_OPTIONS);
  const grpcObject = grpc.loadPackageDefinition(packageDefinition) as unknown as { apipb: { GobgpApi: grpc.ServiceClientConstructor } };
  const GobgpApi = grpcObject.apipb.GobgpApi;

  const typeUrl = (type: protobuf.Type): string => `${TYPE_URL_PREFIX}${type.name}`;
  const proto: GobgpProto = {
    GobgpApi,
    service: GobgpApi.service,
    types: {
      IPAddressPrefix: root.lookupType('apipb.IPAddressPrefix'),
      OriginAttribute: root.lookupType('apipb.OriginAttribute'),
      NextHopAttribute: root.lookupType('apipb.NextHopAttribute'),
      MpReachNLRIAttribute: root.lookupType('apipb.MpReachNLRIAttribute'),
    },
    pack(type, fields) {
      return { type_url: typeUrl(type), value: Buffer.from(type.encode(type.fromObject(fields)).finish()) };
    },
    typeUrl,
    dir,
  };
  cached = { dir, proto };
  return proto;
}
