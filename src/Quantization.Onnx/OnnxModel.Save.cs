using System.Buffers.Binary;
using System.Globalization;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>Saving, inline or with external data.</summary>
public sealed partial class OnnxModel
{
    private const int CopyBufferSize = 1 << 20;

    // Per tensor, the bytes an estimate of the inline size adds for headers and varint lengths of enclosing messages.
    private const long TensorOverhead = 64;

    /// <summary>
    /// Writes the model to a file, inline or with the data of large tensors in one data file beside it (see
    /// <paramref name="options"/>). Both files are written to temporary files in the target directory first and renamed
    /// into place only when both are complete; on failure neither a target nor a temporary file is left behind (an
    /// existing data file of the same name is put back). <see cref="Proto"/> is not changed: locations are rewritten in a
    /// copy, and tensors already stored externally are copied, one at a time through a small buffer, from their source
    /// file into the new data file, so the target directory may be any directory.
    /// </summary>
    /// <param name="path">The target <c>.onnx</c> file.</param>
    /// <param name="options">How to write external data; <see langword="null"/> for the defaults (<see cref="ExternalDataPolicy.Auto"/>).</param>
    /// <exception cref="ArgumentException"><paramref name="path"/> or <paramref name="options"/> is not usable, e.g. the data file name is not a plain file name or is the model's own.</exception>
    /// <exception cref="InvalidOperationException">The model is too large to write inline under <see cref="ExternalDataPolicy.Never"/> (or its inline part is still too large), or the data file would replace a file this model's external data is read from; nothing has been written.</exception>
    /// <exception cref="InvalidDataException">A tensor's data does not match its shape, or its external data is missing or out of range.</exception>
    /// <exception cref="IOException">A file cannot be written; the targets are then left as they were and no temporary file remains.</exception>
    public void Save(string path, OnnxSaveOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new OnnxSaveOptions();
        string full = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{path}' names no file.", nameof(path));
        string dataName = OnnxSaveOptions.DataFileNameFor(options, full);
        string dataFull = Path.Combine(directory, dataName);
        if (SamePath(dataFull, full))
        {
            throw new ArgumentException($"The external data file '{dataName}' would be the model file itself.", nameof(options));
        }

        // A copy whose tensors are stripped of their data: the skeleton whose size is known exactly, to which each
        // tensor's data is then given back, inline or as a reference into the data file.
        ModelProto copy = Proto.Clone();
        List<SavedTensor> tensors = [];
        CollectTensors(Proto.Graph, copy.Graph, tensors);
        foreach (SavedTensor tensor in tensors)
        {
            ClearData(tensor.Copy);
        }

        long skeleton = copy.CalculateSize();
        foreach (SavedTensor tensor in tensors)
        {
            Measure(tensor);
        }

        long inline = skeleton + tensors.Sum(t => t.InlineSize + TensorOverhead);
        bool external = options.ExternalData switch
        {
            ExternalDataPolicy.Always => true,
            ExternalDataPolicy.Never => false,
            _ => inline > OnnxSaveOptions.AutoExternalDataLimit || tensors.Any(t => t.Source is not null),
        };

        if (!external && inline > OnnxSaveOptions.ProtobufSizeLimit)
        {
            throw new InvalidOperationException(FormattableString.Invariant(
                $"'{path}': the model would be about {inline} bytes written inline, more than protobuf's limit of {OnnxSaveOptions.ProtobufSizeLimit}; save it with external data (ExternalDataPolicy.Auto or Always). Nothing was written."));
        }

        foreach (SavedTensor tensor in tensors)
        {
            tensor.External = external && (tensor.Source is not null || (tensor.Movable && tensor.PayloadLength >= options.SizeThreshold));
        }

        long remaining = skeleton + tensors.Where(t => !t.External).Sum(t => t.InlineSize + TensorOverhead);
        if (remaining > OnnxSaveOptions.ProtobufSizeLimit)
        {
            throw new InvalidOperationException(FormattableString.Invariant(
                $"'{path}': even with external data the model would be about {remaining} bytes, more than protobuf's limit of {OnnxSaveOptions.ProtobufSizeLimit} (tensors below the size threshold of {options.SizeThreshold} bytes, string tensors and tensor attributes stay inline). Nothing was written."));
        }

        if (tensors.FirstOrDefault(t => t.External && t.Source is ExternalSource s && SamePath(s.File, dataFull)) is SavedTensor clash)
        {
            throw new InvalidOperationException(
                $"'{path}': the external data file '{dataFull}' would replace the file that tensor '{clash.Name}' is read from; save to another directory or choose another OnnxSaveOptions.ExternalDataFileName. Nothing was written.");
        }

        string modelTemporary = TemporaryPath(full);
        string? dataTemporary = null;
        try
        {
            if (tensors.Any(t => t.External))
            {
                dataTemporary = TemporaryPath(dataFull);
                WriteDataFile(dataTemporary, dataName, tensors.Where(t => t.External));
            }

            foreach (SavedTensor tensor in tensors.Where(t => !t.External))
            {
                RestoreInline(tensor);
            }

            using (FileStream stream = new(modelTemporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                copy.WriteTo(stream);
                stream.Flush(flushToDisk: true);
            }

            Commit(modelTemporary, full, dataTemporary, dataFull);
        }
        finally
        {
            File.Delete(modelTemporary);
            if (dataTemporary is not null)
            {
                File.Delete(dataTemporary);
            }
        }
    }

    /// <summary>
    /// Gathers the tensors whose data Save places: initializers and Constant-node values (movable to the data file), and
    /// any other tensor attribute already stored externally (whose data must follow the model), in subgraphs too.
    /// </summary>
    private static void CollectTensors(GraphProto original, GraphProto copy, List<SavedTensor> tensors)
    {
        for (int i = 0; i < original.Initializer.Count; i++)
        {
            TensorProto tensor = original.Initializer[i];
            string name = string.IsNullOrEmpty(tensor.Name) ? FormattableString.Invariant($"initializer #{i}") : tensor.Name;
            tensors.Add(new SavedTensor(tensor, copy.Initializer[i], name, Movable: true));
        }

        for (int n = 0; n < original.Node.Count; n++)
        {
            NodeProto node = original.Node[n];
            bool constant = node.OpType == "Constant" && node.Domain is "" or "ai.onnx";
            for (int a = 0; a < node.Attribute.Count; a++)
            {
                AttributeProto attribute = node.Attribute[a];
                AttributeProto copied = copy.Node[n].Attribute[a];
                string where = $"attribute '{attribute.Name}' of node '{NodeName(original, n)}'";
                if (attribute.T is TensorProto value)
                {
                    bool movable = constant && attribute.Name == "value";
                    if (movable || value.DataLocation == TensorProto.Types.DataLocation.External)
                    {
                        tensors.Add(new SavedTensor(value, copied.T, string.IsNullOrEmpty(value.Name) ? where : value.Name, movable));
                    }
                }

                for (int t = 0; t < attribute.Tensors.Count; t++)
                {
                    TensorProto element = attribute.Tensors[t];
                    if (element.DataLocation == TensorProto.Types.DataLocation.External)
                    {
                        tensors.Add(new SavedTensor(element, copied.Tensors[t], string.IsNullOrEmpty(element.Name) ? FormattableString.Invariant($"{where} #{t}") : element.Name, Movable: false));
                    }
                }

                if (attribute.G is GraphProto body)
                {
                    CollectTensors(body, copied.G, tensors);
                }

                for (int g = 0; g < attribute.Graphs.Count; g++)
                {
                    CollectTensors(attribute.Graphs[g], copied.Graphs[g], tensors);
                }
            }
        }
    }

    private static void ClearData(TensorProto tensor)
    {
        tensor.RawData = ByteString.Empty;
        tensor.FloatData.Clear();
        tensor.Int32Data.Clear();
        tensor.StringData.Clear();
        tensor.Int64Data.Clear();
        tensor.DoubleData.Clear();
        tensor.Uint64Data.Clear();
        tensor.ExternalData.Clear();
        tensor.DataLocation = TensorProto.Types.DataLocation.Default;
    }

    /// <summary>Finds a tensor's external source (checked) and its sizes: inline, and as raw bytes.</summary>
    private void Measure(SavedTensor tensor)
    {
        TensorProto original = tensor.Original;
        if (original.DataLocation == TensorProto.Types.DataLocation.External)
        {
            ExternalSource source = ResolveExternal(original, tensor.Name, RawLength(original, tensor.Name));
            tensor.Source = source;
            tensor.PayloadLength = source.Length;
            tensor.InlineSize = source.Length;
            return;
        }

        tensor.InlineSize = original.CalculateSize();
        if (!original.RawData.IsEmpty)
        {
            tensor.PayloadLength = original.RawData.Length;
        }
        else if (original.DataType != (int)TensorProto.Types.DataType.String && HasTypedEncoding(original.DataType))
        {
            tensor.PayloadLength = RawLength(original, tensor.Name) ?? -1;
        }
        else
        {
            tensor.PayloadLength = -1; // Strings and types without a known typed-field encoding stay inline.
        }
    }

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

    /// <summary>Gives a tensor that stays inline its data back: its own fields, or the bytes of its external source read in.</summary>
    private static void RestoreInline(SavedTensor tensor)
    {
        TensorProto original = tensor.Original;
        TensorProto copy = tensor.Copy;
        if (tensor.Source is ExternalSource source)
        {
            byte[] bytes = new byte[source.Length];
            using (FileStream input = new(source.File, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1))
            {
                input.Position = source.Offset;
                try
                {
                    input.ReadExactly(bytes);
                }
                catch (EndOfStreamException e)
                {
                    throw new InvalidDataException(FormattableString.Invariant($"Tensor '{tensor.Name}': '{source.Location}' ended before the {source.Length} bytes it was to hold at offset {source.Offset}."), e);
                }
            }

            copy.RawData = UnsafeByteOperations.UnsafeWrap(bytes);
            return;
        }

        copy.RawData = original.RawData;
        copy.FloatData.Add(original.FloatData);
        copy.Int32Data.Add(original.Int32Data);
        copy.StringData.Add(original.StringData);
        copy.Int64Data.Add(original.Int64Data);
        copy.DoubleData.Add(original.DoubleData);
        copy.Uint64Data.Add(original.Uint64Data);
        copy.ExternalData.Add(original.ExternalData);
        copy.DataLocation = original.DataLocation;
    }

    /// <summary>Puts the data file and then the model in place; if the model cannot be, takes the data file back out and restores any file it replaced.</summary>
    private static void Commit(string modelTemporary, string model, string? dataTemporary, string data)
    {
        string? backup = null;
        bool placed = false;
        try
        {
            if (dataTemporary is not null)
            {
                if (File.Exists(data))
                {
                    backup = TemporaryPath(data);
                    File.Move(data, backup);
                }

                File.Move(dataTemporary, data);
                placed = true;
            }

            File.Move(modelTemporary, model, overwrite: true);
        }
        catch
        {
            if (placed)
            {
                File.Delete(data);
            }

            if (backup is not null)
            {
                File.Move(backup, data);
            }

            throw;
        }

        if (backup is not null)
        {
            File.Delete(backup);
        }
    }

    private static string TemporaryPath(string target) =>
        Path.Combine(Path.GetDirectoryName(target) ?? ".", $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");

    private static bool SamePath(string a, string b) =>
        string.Equals(a, b, OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);

    /// <summary>Whether the type's values have a typed field this class can convert to raw bytes: every type up to the FLOAT8 formats but STRING.</summary>
    private static bool HasTypedEncoding(int dataType) =>
        dataType is >= (int)TensorProto.Types.DataType.Float and <= 20 && dataType != (int)TensorProto.Types.DataType.String;

    private static int Int32DataWidth(int dataType) => (TensorProto.Types.DataType)dataType switch
    {
        TensorProto.Types.DataType.Int32 => 4,
        TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Uint16 or TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16 => 2,
        _ => 1,
    };

    /// <summary>Gets the bits of one element as raw data, or 0 for types whose raw size is not known here (STRING, UNDEFINED, future types).</summary>
    private static int ElementBits(int dataType) => dataType switch
    {
        1 or 6 or 12 => 32, // FLOAT, INT32, UINT32
        2 or 3 or 9 => 8, // UINT8, INT8, BOOL
        4 or 5 or 10 or 16 => 16, // UINT16, INT16, FLOAT16, BFLOAT16
        7 or 11 or 13 or 14 => 64, // INT64, DOUBLE, UINT64, COMPLEX64
        15 => 128, // COMPLEX128
        >= 17 and <= 20 or 24 => 8, // FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ, FLOAT8E8M0
        >= 21 and <= 23 => 4, // UINT4, INT4, FLOAT4E2M1: two per byte
        25 or 26 => 2, // UINT2, INT2: four per byte
        _ => 0,
    };

    /// <summary>Gets the bytes a tensor's values take as raw data, or <see langword="null"/> when its type's size is not known.</summary>
    private static long? RawLength(TensorProto tensor, string name)
    {
        int bits = ElementBits(tensor.DataType);
        if (bits == 0)
        {
            return null;
        }

        long count = CheckedElementCount(tensor, name);
        return count > long.MaxValue / bits ? throw new InvalidDataException($"Tensor '{name}' has shape [{string.Join(", ", tensor.Dims)}], more bytes than a file can hold.") : ((count * bits) + 7) / 8;
    }

    private static long CheckedElementCount(TensorProto tensor, string name)
    {
        long count = 1;
        foreach (long dim in tensor.Dims)
        {
            if (dim < 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' has a negative dimension ({dim})."));
            }

            if (dim != 0 && count > long.MaxValue / dim)
            {
                throw new InvalidDataException($"Tensor '{name}' has shape [{string.Join(", ", tensor.Dims)}], more values than a file can hold.");
            }

            count *= dim;
        }

        return count;
    }

    /// <summary>A tensor Save places: the original (read, never changed), its counterpart in the copy being written, and what was found about it.</summary>
    private sealed record SavedTensor(TensorProto Original, TensorProto Copy, string Name, bool Movable)
    {
        /// <summary>Gets or sets where its data is read from, if it is stored externally.</summary>
        public ExternalSource? Source { get; set; }

        /// <summary>Gets or sets its data's size as raw bytes, or -1 when it cannot go external (strings, types without a known encoding).</summary>
        public long PayloadLength { get; set; }

        /// <summary>Gets or sets the bytes it adds to the model when written inline.</summary>
        public long InlineSize { get; set; }

        /// <summary>Gets or sets a value indicating whether its data goes to the data file.</summary>
        public bool External { get; set; }
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
