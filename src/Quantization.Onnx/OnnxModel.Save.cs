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
}
