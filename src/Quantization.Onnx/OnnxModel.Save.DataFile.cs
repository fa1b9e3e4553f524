using System.Buffers.Binary;
using System.Globalization;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public sealed partial class OnnxModel
{
    /// <summary>Writes the data of the tensors that go external into one file, each at an aligned offset, and points their copies at it.</summary>
    private static void WriteDataFile(string temporary, string location, IEnumerable<SavedTensor> tensors)
    {
        byte[] buffer = new byte[CopyBufferSize];
        using FileStream data = new(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 16);
        foreach (SavedTensor tensor in tensors)
        {
            int alignment = tensor.PayloadLength >= OnnxSaveOptions.PageAlignment ? OnnxSaveOptions.PageAlignment : OnnxSaveOptions.SmallTensorAlignment;
            int padding = (int)((alignment - (data.Position % alignment)) % alignment);
            Array.Clear(buffer, 0, padding);
            data.Write(buffer, 0, padding);

            long offset = data.Position;
            WriteData(tensor, data, buffer);
            long length = data.Position - offset;
            if (length != tensor.PayloadLength)
            {
                throw new InvalidDataException(FormattableString.Invariant($"Tensor '{tensor.Name}' wrote {length} bytes of data but was measured at {tensor.PayloadLength}."));
            }

            TensorProto copy = tensor.Copy;
            copy.DataLocation = TensorProto.Types.DataLocation.External;
            copy.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
            copy.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
            copy.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(CultureInfo.InvariantCulture) });
        }

        data.Flush(flushToDisk: true);
    }

    /// <summary>Writes a tensor's data as raw little-endian bytes: copied from its external source, from <c>raw_data</c>, or converted from its typed field.</summary>
    private static void WriteData(SavedTensor tensor, Stream output, byte[] buffer)
    {
        TensorProto original = tensor.Original;
        if (tensor.Source is ExternalSource source)
        {
            using FileStream input = new(source.File, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
            input.Position = source.Offset;
            long left = source.Length;
            while (left > 0)
            {
                int read = input.Read(buffer, 0, (int)Math.Min(left, buffer.Length));
                if (read == 0)
                {
                    throw new InvalidDataException(FormattableString.Invariant($"Tensor '{tensor.Name}': '{source.Location}' ended {left} bytes short of the {source.Length} it was to hold at offset {source.Offset} while it was copied."));
                }

                output.Write(buffer, 0, read);
                left -= read;
            }

            return;
        }

        if (!original.RawData.IsEmpty)
        {
            if (RawLength(original, tensor.Name) is long expected && expected != original.RawData.Length)
            {
                throw new InvalidDataException(FormattableString.Invariant($"Tensor '{tensor.Name}' has shape [{string.Join(", ", original.Dims)}] and needs {expected} bytes of raw_data but has {original.RawData.Length}."));
            }

            output.Write(original.RawData.Span);
            return;
        }

        WriteTyped(original, tensor.Name, new ChunkWriter(output, buffer));
    }

    /// <summary>Converts a typed field to raw bytes by the packing rules of the ONNX specification.</summary>
    private static void WriteTyped(TensorProto tensor, string name, ChunkWriter writer)
    {
        long count = CheckedElementCount(tensor, name);
        switch ((TensorProto.Types.DataType)tensor.DataType)
        {
            case TensorProto.Types.DataType.Float:
            case TensorProto.Types.DataType.Complex64:
                RequireCount(tensor, name, "float_data", tensor.FloatData.Count, count * (tensor.DataType == (int)TensorProto.Types.DataType.Complex64 ? 2 : 1));
                foreach (float value in tensor.FloatData)
                {
                    BinaryPrimitives.WriteSingleLittleEndian(writer.Next(sizeof(float)), value);
                }

                break;
            case TensorProto.Types.DataType.Double:
            case TensorProto.Types.DataType.Complex128:
                RequireCount(tensor, name, "double_data", tensor.DoubleData.Count, count * (tensor.DataType == (int)TensorProto.Types.DataType.Complex128 ? 2 : 1));
                foreach (double value in tensor.DoubleData)
                {
                    BinaryPrimitives.WriteDoubleLittleEndian(writer.Next(sizeof(double)), value);
                }

                break;
            case TensorProto.Types.DataType.Int64:
                RequireCount(tensor, name, "int64_data", tensor.Int64Data.Count, count);
                foreach (long value in tensor.Int64Data)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(writer.Next(sizeof(long)), value);
                }

                break;
            case TensorProto.Types.DataType.Uint32:
            case TensorProto.Types.DataType.Uint64:
                RequireCount(tensor, name, "uint64_data", tensor.Uint64Data.Count, count);
                bool narrow = tensor.DataType == (int)TensorProto.Types.DataType.Uint32;
                foreach (ulong value in tensor.Uint64Data)
                {
                    if (narrow)
                    {
                        BinaryPrimitives.WriteUInt32LittleEndian(writer.Next(sizeof(uint)), (uint)value);
                    }
                    else
                    {
                        BinaryPrimitives.WriteUInt64LittleEndian(writer.Next(sizeof(ulong)), value);
                    }
                }

                break;
            default:
                // int32_data: INT32 whole; 16-bit types (INT16, UINT16, FLOAT16 and BFLOAT16 bit patterns) in the low
                // 16 bits; 8-bit types (INT8, UINT8, BOOL, the FLOAT8 formats) in the low 8 bits.
                int width = Int32DataWidth(tensor.DataType);
                RequireCount(tensor, name, "int32_data", tensor.Int32Data.Count, count);
                bool boolean = tensor.DataType == (int)TensorProto.Types.DataType.Bool;
                foreach (int value in tensor.Int32Data)
                {
                    Span<byte> target = writer.Next(width);
                    switch (width)
                    {
                        case 4:
                            BinaryPrimitives.WriteInt32LittleEndian(target, value);
                            break;
                        case 2:
                            BinaryPrimitives.WriteUInt16LittleEndian(target, (ushort)value);
                            break;
                        default:
                            target[0] = boolean ? (byte)(value != 0 ? 1 : 0) : (byte)value;
                            break;
                    }
                }

                break;
        }

        writer.Flush();
    }

    private static void RequireCount(TensorProto tensor, string name, string field, int actual, long expected)
    {
        if (actual != expected)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' has shape [{string.Join(", ", tensor.Dims)}] and needs {expected} values in {field} but has {actual}."));
        }
    }

    /// <summary>Batches small writes through a buffer.</summary>
    private sealed class ChunkWriter(Stream output, byte[] buffer)
    {
        private int _used;

        public Span<byte> Next(int width)
        {
            if (_used + width > buffer.Length)
            {
                Flush();
            }

            Span<byte> span = buffer.AsSpan(_used, width);
            _used += width;
            return span;
        }

        public void Flush()
        {
            output.Write(buffer, 0, _used);
            _used = 0;
        }
    }
}
