/**
 * Server reflection (v1 and v1alpha) for grpcurl and other debugging clients, served from the
 * compiled descriptor set's own files: each file under its real name (`citadel/v1/task.proto`)
 * with its real imports, the well-known types (`google/protobuf/timestamp.proto`...) included,
 * so a client that resolves every dependency by file name, as grpcurl does, can describe and
 * invoke every RPC. (Handing @grpc/reflection a proto-loader package definition instead merges
 * the files of a package into one and drops their imports: grpcurl then cannot resolve
 * `google.protobuf.Timestamp`.)
 */
import type { Server } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { descriptorSet } from './descriptor-set.js';

/** `FileDescriptorSet.file`: field 1, one serialized FileDescriptorProto each. */
const FILE_FIELD = 1;

/** The serialized FileDescriptorProto of every file in a FileDescriptorSet, byte for byte. */
export function filesOfDescriptorSet(set: Uint8Array): Buffer[] {
  const reader = new BinaryReader(set);
  const files: Buffer[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === FILE_FIELD && wireType === WireType.LengthDelimited) {
      files.push(Buffer.from(reader.bytes()));
    } else {
      reader.skip(wireType);
    }
  }
  return files;
}

/**
 * Adds reflection to `server`, listing `services` (the ones that server serves) and the health
 * service, and describing every type they use.
 */
export async function addReflection(server: Server, services: string[]): Promise<void> {
  const files = filesOfDescriptorSet(await descriptorSet());
  // The reflection implementation reads only `fileDescriptorProtos` of each entry.
  const definition = {
    ...loadSync(healthProtoPath),
    'citadel.descriptor_set': { fileDescriptorProtos: files },
  } as unknown as PackageDefinition;
  new ReflectionService(definition, {
    services: [...services, 'grpc.health.v1.Health'],
  }).addToServer(server);
}
