using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Quantization;

/// <summary>
/// Quantizes a safetensors checkpoint (one file or shards with an index) tensor by tensor into compressed-tensors'
/// layouts: tensor names, dtypes, shapes and the <c>quantization_config</c> fields follow compressed-tensors' documented
/// format, checked field by field by the tests; no loader of that format (vLLM and others) is run by them, so loading
/// there is expected, not verified. 8-bit weights use <c>int-quantized</c>: each quantized <c>X</c> becomes int8
/// <c>X</c>, float32 <c>X_scale</c> ([out, 1] per channel, [out, in / group] per group, [1] per tensor) and, when
/// asymmetric, int8 <c>X_zero_point</c>. 4-bit weights use <c>pack-quantized</c>: int32 <c>X_packed</c> [out, ceil(in / 8)],
/// <c>X_scale</c> in X's dtype ([out, ceil(in / group)] or [out, 1]), when asymmetric int32 <c>X_zero_point</c> packed
/// along the outputs, and int64 <c>X_shape</c>. The other tensors are copied; <c>config.json</c> gets a
/// <c>quantization_config</c>. Streamed: tensors are read through the file a block of rows at a time and written as
/// they are quantized, so memory holds a block, never a checkpoint.
/// </summary>
public static class CheckpointQuantizer
{
    /// <summary>Elements read and quantized at a time.</summary>
    private const int BlockElements = 1 << 20;

    /// <summary>Quantizes a checkpoint into a directory, shard for shard under the same file names.</summary>
    /// <param name="input">A <c>.safetensors</c> file, an index <c>.json</c>, or a directory holding one (see <see cref="SafeTensorsCheckpoint.Open"/>).</param>
    /// <param name="outputDirectory">Where the quantized checkpoint goes; created if needed. Each file is written atomically; the index and <c>config.json</c> last.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <param name="progress">Receives a report after each tensor.</param>
    /// <param name="cancellationToken">Cancels between blocks; the shard being written is then not left behind.</param>
    /// <returns>A report per tensor.</returns>
    /// <exception cref="InvalidDataException">The input is not a valid checkpoint, or its <c>config.json</c> is not a JSON object.</exception>
    /// <exception cref="IOException">The output directory already holds a checkpoint (the input itself, say).</exception>
    /// <exception cref="NotSupportedException">The scheme is not one the format holds.</exception>
    /// <exception cref="NonFiniteValueException">A weight holds NaN or infinity.</exception>
    public static IReadOnlyList<CheckpointTensorReport> Quantize(string input, string outputDirectory, CheckpointQuantizationOptions? options = null, IProgress<CheckpointProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(input);
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        options ??= new CheckpointQuantizationOptions();
        options.Validate();
        using SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(input);
        if (Directory.Exists(outputDirectory) && (File.Exists(Path.Combine(outputDirectory, SafeTensorsCheckpoint.IndexFileName)) || Directory.EnumerateFiles(outputDirectory, "*.safetensors").Any()))
        {
            // Writing over a checkpoint would mix it with this one, or destroy the input itself.
            throw new IOException($"'{outputDirectory}' already holds a checkpoint; quantize into a new or empty directory.");
        }

        Directory.CreateDirectory(outputDirectory);
        long total = checkpoint.Tensors.Sum(t => t.Tensor.Length), done = 0;
        List<CheckpointTensorReport> reports = [];
        Dictionary<string, string> weightMap = new(StringComparer.Ordinal);
        foreach (SafeTensorsFile file in checkpoint.Files)
        {
            string shard = Path.GetFileName(file.Path);
            List<SafeTensorDescriptor> descriptors = [.. file.Tensors.SelectMany(t => Outputs(t, options))];
            using SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(outputDirectory, shard), descriptors, file.Metadata);
            foreach (SafeTensorInfo tensor in file.Tensors)
            {
                bool quantized = options.Selects(tensor);
                if (!quantized)
                {
                    Copy(file, tensor, writer, cancellationToken);
                }
                else if (options.Scheme.Type.GetBitWidth() == PackQuantized.Bits)
                {
                    WritePacked(file, tensor, options.Scheme, writer, cancellationToken);
                }
                else
                {
                    WriteInt8(file, tensor, options.Scheme, writer, cancellationToken);
                }

                long written = Outputs(tensor, options).Sum(d => SafeTensorsHeader.ByteCount(d.DataType, d.Shape, d.Name));
                reports.Add(new CheckpointTensorReport(tensor.Name, tensor.DataType, tensor.Shape, quantized, tensor.Length, written));
                done += tensor.Length;
                progress?.Report(new CheckpointProgress(tensor.Name, done, total));
            }

            writer.Commit();
            foreach (SafeTensorDescriptor descriptor in descriptors)
            {
                weightMap[descriptor.Name] = shard;
            }
        }

        // An index unless the output is the one file a loader looks for without one.
        if (checkpoint.Files.Count > 1 || Path.GetFileName(checkpoint.Files[0].Path) != SafeTensorsCheckpoint.SingleFileName)
        {
            SafeTensorsCheckpoint.WriteIndex(Path.Combine(outputDirectory, SafeTensorsCheckpoint.IndexFileName), weightMap, reports.Sum(r => r.BytesAfter));
        }

        WriteConfig(input, outputDirectory, options, reports);
        return reports;
    }

    /// <summary>
    /// Reads a tensor that <see cref="Quantize"/> (or another compressed-tensors writer) stored back as a
    /// <see cref="QuantizedTensor"/>: int8 <c>name</c> for 8-bit schemes; for 4-bit schemes the pack-quantized
    /// <c>name_packed</c> and <c>name_shape</c>; with <c>name_scale</c> and, when asymmetric, <c>name_zero_point</c>.
    /// The file is hostile input: every type, shape and value is checked against the others.
    /// </summary>
    /// <param name="checkpoint">The quantized checkpoint.</param>
    /// <param name="name">The weight's name (as in the original checkpoint, without a suffix).</param>
    /// <param name="scheme">The scheme it was quantized with; <see cref="ReadScheme"/> reads it from the checkpoint's <c>config.json</c>.</param>
    /// <returns>The tensor, bit for bit what was written; <see cref="QuantizedTensor.Dequantize()"/> restores the floats.</returns>
    /// <exception cref="InvalidDataException">A tensor the layout needs is missing, the stored tensors do not have the types and shapes the scheme and each other imply, the stored shape has a dimension that is not positive or too many elements, a scale is negative or not finite, or a zero point is outside the format's range. The message names the tensor.</exception>
    /// <exception cref="NotSupportedException">The scheme is not one the checkpoint layouts hold.</exception>
    public static QuantizedTensor ReadQuantized(SafeTensorsCheckpoint checkpoint, string name, QuantizationScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(scheme);
        CheckpointQuantizationOptions.Validate(scheme);
        return scheme.Type.GetBitWidth() == PackQuantized.Bits ? ReadPacked(checkpoint, name, scheme) : ReadInt8(checkpoint, name, scheme);
    }

    /// <summary>
    /// Reads the weights' scheme from the compressed-tensors <c>quantization_config</c> in a checkpoint's
    /// <c>config.json</c>, tolerating missing keys as compressed-tensors does (8 bits, int, symmetric, and a strategy
    /// inferred from <c>group_size</c>: none for per tensor, -1 for per channel, positive for per group).
    /// </summary>
    /// <param name="checkpoint">The checkpoint: a <c>.safetensors</c> file, an index <c>.json</c> or their directory.</param>
    /// <returns>The scheme <see cref="ReadQuantized"/> needs, or <see langword="null"/> when there is no <c>config.json</c> or it has no <c>quantization_config</c>.</returns>
    /// <exception cref="InvalidDataException"><c>config.json</c> is not valid JSON, or a key of the <c>quantization_config</c> has the wrong kind of value.</exception>
    /// <exception cref="NotSupportedException">The configuration is not one this library reads: another quantization method or format, float types, several config groups, or a strategy the layouts do not hold.</exception>
    public static QuantizationScheme? ReadScheme(string checkpoint)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpoint);
        string path = Path.Combine(ConfigDirectory(checkpoint), "config.json");
        if (!File.Exists(path) || ReadConfig(path)["quantization_config"] is not JsonNode config)
        {
            return null;
        }

        try
        {
            return SchemeOf(config as JsonObject ?? throw new InvalidDataException("'quantization_config' is not an object."));
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or InvalidDataException)
        {
            throw new InvalidDataException($"'{path}': the quantization_config is malformed: {e.Message}", e);
        }
    }

    /// <summary>The scheme of a compressed-tensors quantization_config.</summary>
    private static QuantizationScheme SchemeOf(JsonObject config)
    {
        if ((string?)config["quant_method"] is string method && method != "compressed-tensors")
        {
            throw new NotSupportedException($"quant_method '{method}' is not compressed-tensors.");
        }

        if (config["config_groups"] is not JsonObject { Count: 1 } groups || groups.First().Value?["weights"] is not JsonObject weights)
        {
            throw new NotSupportedException("The quantization_config needs exactly one config group with weights; checkpoints of mixed schemes are not read.");
        }

        int bits = (int?)weights["num_bits"] ?? 8;
        string type = (string?)weights["type"] ?? "int";
        bool symmetric = (bool?)weights["symmetric"] ?? true;
        int? groupSize = (int?)weights["group_size"];
        string strategy = (string?)weights["strategy"] ?? groupSize switch { null => "tensor", -1 => "channel", _ => "group" };
        string format = (string?)config["format"] ?? (bits == PackQuantized.Bits ? "pack-quantized" : "int-quantized");
        if (type != "int" || (bits, format) is not ((8, "int-quantized") or (PackQuantized.Bits, "pack-quantized")))
        {
            throw new NotSupportedException($"{bits}-bit {type} weights in format '{format}' are not read; 8-bit int weights are int-quantized and 4-bit int weights pack-quantized.");
        }

        QuantizationGranularity granularity = strategy switch
        {
            "channel" => QuantizationGranularity.PerChannel(0),
            "group" when groupSize > 0 => QuantizationGranularity.PerGroup(groupSize.Value),
            "group" => throw new InvalidDataException($"strategy 'group' needs a positive group_size, not {groupSize?.ToString(CultureInfo.InvariantCulture) ?? "none"}."),
            "tensor" when bits == 8 => QuantizationGranularity.PerTensor,
            _ => throw new NotSupportedException($"Strategy '{strategy}' is not read for {bits} bits; channel, group and (8 bits) tensor are."),
        };
        QuantizationScheme scheme = bits == PackQuantized.Bits
            ? new QuantizationScheme(symmetric ? QuantizedType.Int4 : QuantizedType.UInt4, symmetric, granularity, range: QuantizationRange.Full)
            : new QuantizationScheme(QuantizedType.Int8, symmetric, granularity);
        CheckpointQuantizationOptions.Validate(scheme);
        return scheme;
    }

    /// <summary>Reads an int-quantized tensor: int8 data, float scales and int8 zero points.</summary>
    private static QuantizedTensor ReadInt8(SafeTensorsCheckpoint checkpoint, string name, QuantizationScheme scheme)
    {
        (SafeTensorsFile file, SafeTensorInfo data) = Part(checkpoint, name);
        if (data.DataType != SafeTensorDataType.Int8 || data.Shape.Count != 2)
        {
            throw new InvalidDataException($"Tensor '{name}' is {data.DataType.HeaderName()} of rank {data.Shape.Count}, not quantized int8 of rank 2.");
        }

        int[] shape = [checked((int)data.Shape[0]), checked((int)data.Shape[1])];
        float[] scales = Part(checkpoint, name + PackQuantized.ScaleSuffix).File.ReadSingles(name + PackQuantized.ScaleSuffix);
        int[] zeroPoints = scheme.Symmetric ? new int[scales.Length] : [.. Part(checkpoint, name + PackQuantized.ZeroPointSuffix).File.GetSpan<sbyte>(name + PackQuantized.ZeroPointSuffix).ToArray().Select(z => (int)z)];
        return new QuantizedTensor(file.GetBytes(name), shape, scheme, new QuantizationParameters(scales, zeroPoints), name);
    }

    /// <summary>Reads a pack-quantized tensor, checking each stored tensor against the shape in <c>name_shape</c>.</summary>
    private static QuantizedTensor ReadPacked(SafeTensorsCheckpoint checkpoint, string name, QuantizationScheme scheme)
    {
        string packedName = name + PackQuantized.PackedSuffix;
        (int rows, int columns) = ReadShape(checkpoint, name + PackQuantized.ShapeSuffix);
        int words = (int)PackQuantized.WordCount(columns), groups = (int)Groups(columns, scheme.Granularity);
        (SafeTensorsFile file, SafeTensorInfo packed) = Part(checkpoint, packedName);
        if (packed.DataType != SafeTensorDataType.Int32 || packed.Shape.Count != 2 || packed.Shape[0] != rows || packed.Shape[1] != words)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{packedName}' is {Describe(packed)}, but the shape [{rows}, {columns}] in '{name}{PackQuantized.ShapeSuffix}' needs I32 [{rows}, {words}] (eight 4-bit values a word along the inputs)."));
        }

        float[] scales = ReadScales(checkpoint, name + PackQuantized.ScaleSuffix, rows, groups);
        int offset = PackQuantized.CodeOffset(scheme.Type);
        int[] zeroPoints = scheme.Symmetric ? new int[scales.Length] : [.. ReadZeroPointCodes(checkpoint, name + PackQuantized.ZeroPointSuffix, rows, groups).Select(code => code - offset)];
        ReadOnlySpan<int> data = file.GetSpan<int>(packedName);
        byte[] codes = new byte[rows * columns];
        for (int row = 0; row < rows; row++)
        {
            PackQuantized.Unpack(data.Slice(row * words, words), codes.AsSpan(row * columns, columns));
        }

        // A code becomes the scheme's value: code - 8 (two's complement) for Int4, the code for UInt4.
        for (int i = 0; i < codes.Length; i++)
        {
            codes[i] = (byte)(codes[i] - offset);
        }

        return QuantizedTensor.FromCodes(codes, [rows, columns], scheme, new QuantizationParameters(scales, zeroPoints), name);
    }

    /// <summary>Reads the [N, K] original shape of a pack-quantized weight.</summary>
    private static (int Rows, int Columns) ReadShape(SafeTensorsCheckpoint checkpoint, string name)
    {
        (SafeTensorsFile file, SafeTensorInfo info) = Part(checkpoint, name);
        if (info.DataType is not (SafeTensorDataType.Int64 or SafeTensorDataType.Int32) || info.Shape is not [2])
        {
            throw new InvalidDataException($"Tensor '{name}' is {Describe(info)}, not the I64 [2] original shape of a pack-quantized weight.");
        }

        (long rows, long columns) = info.DataType == SafeTensorDataType.Int64
            ? (file.GetSpan<long>(name)[0], file.GetSpan<long>(name)[1])
            : (file.GetSpan<int>(name)[0], file.GetSpan<int>(name)[1]);
        if (rows <= 0 || columns <= 0 || rows > Array.MaxLength / columns)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' holds the shape [{rows}, {columns}]: both dimensions must be positive and their product at most {Array.MaxLength}."));
        }

        return ((int)rows, (int)columns);
    }

    /// <summary>Reads [rows, groups] scales of any float type, each finite and not negative.</summary>
    private static float[] ReadScales(SafeTensorsCheckpoint checkpoint, string name, int rows, int groups)
    {
        (SafeTensorsFile file, SafeTensorInfo info) = Part(checkpoint, name);
        if (info.DataType is not (SafeTensorDataType.Float16 or SafeTensorDataType.BFloat16 or SafeTensorDataType.Float32 or SafeTensorDataType.Float64) || info.Shape is not [long r, long g] || r != rows || g != groups)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' is {Describe(info)}, not the float [{rows}, {groups}] scales of its weight."));
        }

        float[] scales = file.ReadSingles(name);
        int bad = Array.FindIndex(scales, s => !float.IsFinite(s) || s < 0);
        if (bad >= 0)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}': scale {scales[bad]} at index {bad} is negative or not finite."));
        }

        return scales;
    }

    /// <summary>
    /// Reads asymmetric 4-bit zero points as codes (compressed-tensors' signed zero point + 8): int32 [ceil(rows / 8), groups]
    /// packed along the outputs as written, or, from older writers, int8 [rows, groups] signed values in [-8, 7].
    /// </summary>
    private static byte[] ReadZeroPointCodes(SafeTensorsCheckpoint checkpoint, string name, int rows, int groups)
    {
        (SafeTensorsFile file, SafeTensorInfo info) = Part(checkpoint, name);
        long packedRows = PackQuantized.WordCount(rows);
        if (info.DataType == SafeTensorDataType.Int32 && info.Shape is [long r, long g] && r == packedRows && g == groups)
        {
            return PackQuantized.UnpackColumns(file.GetSpan<int>(name), rows, groups);
        }

        if (info.DataType == SafeTensorDataType.Int8 && info.Shape is [long r8, long g8] && r8 == rows && g8 == groups)
        {
            ReadOnlySpan<sbyte> values = file.GetSpan<sbyte>(name);
            int min = QuantizedType.Int4.GetMinValue(), max = QuantizedType.Int4.GetMaxValue();
            byte[] codes = new byte[values.Length];
            for (int i = 0; i < values.Length; i++)
            {
                if (values[i] < min || values[i] > max)
                {
                    throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}': zero point {values[i]} at index {i} is outside [{min}, {max}], compressed-tensors' signed range for 4 bits (an unsigned zero point stored without the -8 shift?)."));
                }

                codes[i] = (byte)(values[i] - min);
            }

            return codes;
        }

        throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' is {Describe(info)}; the zero points of a [{rows}, ...] weight with {groups} groups a row are I32 [{packedRows}, {groups}], packed along the outputs."));
    }

    /// <summary>A stored part of a quantized weight, with its file.</summary>
    /// <exception cref="InvalidDataException">The checkpoint has no tensor of that name.</exception>
    private static (SafeTensorsFile File, SafeTensorInfo Tensor) Part(SafeTensorsCheckpoint checkpoint, string name)
    {
        try
        {
            SafeTensorsFile file = checkpoint.FileOf(name);
            return (file, file[name]);
        }
        catch (KeyNotFoundException e)
        {
            throw new InvalidDataException($"Tensor '{name}' of a quantized weight is missing from the checkpoint.", e);
        }
    }

    /// <summary>A tensor's type and shape for messages, e.g. <c>I32 [4, 2]</c>.</summary>
    private static string Describe(SafeTensorInfo tensor) => $"{tensor.DataType.HeaderName()} [{string.Join(", ", tensor.Shape)}]";

    /// <summary>The parameter groups of a row of <paramref name="columns"/> inputs: ceil(columns / group) per group, 1 per channel.</summary>
    private static long Groups(long columns, QuantizationGranularity granularity) =>
        granularity.Kind == GranularityKind.PerGroup ? (columns + granularity.GroupSize - 1) / granularity.GroupSize : 1;

    /// <summary>The tensors an input tensor becomes: itself, the int-quantized data with its scales and zero points, or the pack-quantized ones.</summary>
    private static IEnumerable<SafeTensorDescriptor> Outputs(SafeTensorInfo tensor, CheckpointQuantizationOptions options)
    {
        if (!options.Selects(tensor))
        {
            yield return new SafeTensorDescriptor(tensor.Name, tensor.DataType, tensor.Shape);
            yield break;
        }

        QuantizationScheme scheme = options.Scheme;
        if (scheme.Type.GetBitWidth() == PackQuantized.Bits)
        {
            long rows = tensor.Shape[0], columns = tensor.Shape[1], groups = Groups(columns, scheme.Granularity);
            yield return new SafeTensorDescriptor(tensor.Name + PackQuantized.PackedSuffix, SafeTensorDataType.Int32, [rows, PackQuantized.WordCount(columns)]);
            yield return new SafeTensorDescriptor(tensor.Name + PackQuantized.ScaleSuffix, tensor.DataType, [rows, groups]);
            if (!scheme.Symmetric)
            {
                yield return new SafeTensorDescriptor(tensor.Name + PackQuantized.ZeroPointSuffix, SafeTensorDataType.Int32, [PackQuantized.WordCount(rows), groups]);
            }

            yield return new SafeTensorDescriptor(tensor.Name + PackQuantized.ShapeSuffix, SafeTensorDataType.Int64, [2]);
            yield break;
        }

        long[] parameters = ParameterShape(tensor.Shape, scheme.Granularity, tensor.Name);
        yield return new SafeTensorDescriptor(tensor.Name, SafeTensorDataType.Int8, tensor.Shape);
        yield return new SafeTensorDescriptor(tensor.Name + PackQuantized.ScaleSuffix, SafeTensorDataType.Float32, parameters);
        if (!scheme.Symmetric)
        {
            yield return new SafeTensorDescriptor(tensor.Name + PackQuantized.ZeroPointSuffix, SafeTensorDataType.Int8, parameters);
        }
    }

    private static long[] ParameterShape(IReadOnlyList<long> shape, QuantizationGranularity granularity, string name) => granularity.Kind switch
    {
        GranularityKind.PerTensor => [1],
        GranularityKind.PerChannel => [shape[0], 1],
        _ when shape[1] % granularity.GroupSize == 0 => [shape[0], shape[1] / granularity.GroupSize],
        _ => throw new ArgumentException(FormattableString.Invariant($"Tensor '{name}' has {shape[1]} inputs, not a multiple of the group size {granularity.GroupSize}.")),
    };

    /// <summary>Quantizes a 2-D tensor to int8 a block of rows at a time, writing the int8 rows as they come and the parameters after them.</summary>
    private static void WriteInt8(SafeTensorsFile file, SafeTensorInfo tensor, QuantizationScheme scheme, SafeTensorsWriter writer, CancellationToken cancellationToken)
    {
        int rows = checked((int)tensor.Shape[0]), columns = checked((int)tensor.Shape[1]);
        int blockRows = Math.Clamp(BlockElements / columns, 1, rows);
        float[] block = new float[(long)blockRows * columns];
        QuantizationParameters? whole = scheme.Granularity.Kind == GranularityKind.PerTensor ? TensorRange(file, tensor, scheme, block, blockRows, cancellationToken) : null;
        List<float> scales = [];
        List<int> zeroPoints = [];
        for (int row = 0; row < rows; row += blockRows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(blockRows, rows - row);
            Span<float> values = block.AsSpan(0, count * columns);
            file.ReadSingles(tensor, (long)row * columns, values);
            int[] shape = [count, columns];
            QuantizedTensor quantized = whole is null
                ? QuantizedTensor.Quantize(values, shape, scheme, tensor.Name)
                : QuantizedTensor.Quantize(values, shape, scheme, whole, tensor.Name);
            writer.Write(quantized.Data);
            if (whole is null)
            {
                scales.AddRange(quantized.Parameters.Scales);
                zeroPoints.AddRange(quantized.Parameters.ZeroPoints);
            }
        }

        if (whole is not null)
        {
            scales.AddRange(whole.Scales);
            zeroPoints.AddRange(whole.ZeroPoints);
        }

        writer.Write<float>(CollectionsMarshal.AsSpan(scales));
        if (!scheme.Symmetric)
        {
            writer.Write<sbyte>([.. zeroPoints.Select(z => (sbyte)z)]);
        }
    }

    /// <summary>
    /// Quantizes a 2-D tensor to 4 bits a block of rows at a time, writing each row's codes packed into int32 words as
    /// they come, then the scales in the weight's dtype, the zero points packed along the outputs and the shape.
    /// </summary>
    private static void WritePacked(SafeTensorsFile file, SafeTensorInfo tensor, QuantizationScheme scheme, SafeTensorsWriter writer, CancellationToken cancellationToken)
    {
        int rows = checked((int)tensor.Shape[0]), columns = checked((int)tensor.Shape[1]);
        int words = checked((int)PackQuantized.WordCount(columns)), offset = PackQuantized.CodeOffset(scheme.Type);
        int blockRows = Math.Clamp(BlockElements / columns, 1, rows);
        float[] block = new float[(long)blockRows * columns];
        byte[] codes = new byte[(long)blockRows * columns];
        int[] packed = new int[(long)blockRows * words];
        List<float> scales = [];
        List<int> zeroPoints = [];
        for (int row = 0; row < rows; row += blockRows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(blockRows, rows - row);
            Span<float> values = block.AsSpan(0, count * columns);
            file.ReadSingles(tensor, (long)row * columns, values);
            QuantizedTensor quantized = QuantizeForStorage(values, [count, columns], scheme, tensor);
            if (scheme.Type == QuantizedType.Int4)
            {
                sbyte[] signed = quantized.GetInt4Data();
                for (int i = 0; i < signed.Length; i++)
                {
                    codes[i] = (byte)(signed[i] + offset);
                }
            }
            else
            {
                quantized.GetUInt4Data().CopyTo(codes, 0);
            }

            for (int r = 0; r < count; r++)
            {
                PackQuantized.Pack(codes.AsSpan(r * columns, columns), packed.AsSpan(r * words, words));
            }

            writer.Write<int>(packed.AsSpan(0, count * words));
            scales.AddRange(quantized.Parameters.Scales);
            zeroPoints.AddRange(quantized.Parameters.ZeroPoints);
        }

        writer.Write(SafeTensorFloats.ToBytes(CollectionsMarshal.AsSpan(scales), tensor.DataType));
        if (!scheme.Symmetric)
        {
            writer.Write<int>(PackQuantized.PackColumns([.. zeroPoints.Select(z => (byte)(z + offset))], rows, (int)Groups(columns, scheme.Granularity)));
        }

        writer.Write<long>([rows, columns]);
    }

    /// <summary>
    /// Quantizes with scales the output holds exactly: pack-quantized stores them in the weight's dtype, so they are
    /// rounded to it first (one that rounds to zero in float16 becomes 1, as a zero range does) and the values are
    /// quantized with the rounded scales. Reading back then gives these codes and scales bit for bit.
    /// </summary>
    private static QuantizedTensor QuantizeForStorage(ReadOnlySpan<float> values, int[] shape, QuantizationScheme scheme, SafeTensorInfo tensor)
    {
        QuantizedTensor quantized = QuantizedTensor.Quantize(values, shape, scheme, tensor.Name);
        float[] scales = quantized.Parameters.Scales.ToArray();
        bool rounded = false;
        for (int i = 0; i < scales.Length; i++)
        {
            float stored = SafeTensorFloats.Round(scales[i], tensor.DataType);
            stored = stored == 0 ? 1 : stored;
            rounded |= stored != scales[i];
            scales[i] = stored;
        }

        return rounded ? QuantizedTensor.Quantize(values, shape, scheme, new QuantizationParameters(scales, quantized.Parameters.ZeroPoints), tensor.Name) : quantized;
    }

    /// <summary>The per-tensor parameters of a tensor, from a first pass over its blocks.</summary>
    private static QuantizationParameters TensorRange(SafeTensorsFile file, SafeTensorInfo tensor, QuantizationScheme scheme, float[] block, int blockRows, CancellationToken cancellationToken)
    {
        int rows = (int)tensor.Shape[0], columns = (int)tensor.Shape[1];
        MinMaxObserver observer = new(scheme);
        for (int row = 0; row < rows; row += blockRows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(blockRows, rows - row);
            Span<float> values = block.AsSpan(0, count * columns);
            file.ReadSingles(tensor, (long)row * columns, values);
            observer.Observe(values, [count, columns], tensor.Name);
        }

        return observer.ComputeParameters();
    }

    private static void Copy(SafeTensorsFile file, SafeTensorInfo tensor, SafeTensorsWriter writer, CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[Math.Min(tensor.Length, 4 << 20)];
        for (long start = 0; start < tensor.Length; start += buffer.Length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Span<byte> part = buffer.AsSpan(0, (int)Math.Min(buffer.Length, tensor.Length - start));
            file.ReadBytes(tensor, start, part);
            writer.Write(part);
        }
    }

    /// <summary>The directory of a checkpoint given as a file, an index or a directory: where its <c>config.json</c> is.</summary>
    private static string ConfigDirectory(string checkpoint) =>
        Directory.Exists(checkpoint) ? checkpoint : Path.GetDirectoryName(Path.GetFullPath(checkpoint))!;

    /// <summary>Reads a <c>config.json</c> as a JSON object.</summary>
    private static JsonObject ReadConfig(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllBytes(path)) as JsonObject ?? throw new InvalidDataException($"'{path}' is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>
    /// Writes <c>config.json</c>: the input's (from its directory) with a <c>quantization_config</c> added, or one holding
    /// only that. The keys are compressed-tensors' (<c>quantization/quant_config.py</c>, <c>quant_args.py</c>): one config
    /// group targeting Linear layers, weight-only, and the unquantized Linear weights in <c>ignore</c>.
    /// </summary>
    private static void WriteConfig(string input, string outputDirectory, CheckpointQuantizationOptions options, List<CheckpointTensorReport> reports)
    {
        string source = Path.Combine(ConfigDirectory(input), "config.json");
        JsonObject config = File.Exists(source) ? ReadConfig(source) : [];
        QuantizationScheme scheme = options.Scheme;
        QuantizationGranularity granularity = scheme.Granularity;
        int bits = scheme.Type.GetBitWidth();
        config["quantization_config"] = new JsonObject
        {
            ["quant_method"] = "compressed-tensors",
            ["format"] = bits == PackQuantized.Bits ? "pack-quantized" : "int-quantized",
            ["quantization_status"] = "compressed",
            ["config_groups"] = new JsonObject
            {
                ["group_0"] = new JsonObject
                {
                    ["targets"] = new JsonArray("Linear"),
                    ["weights"] = new JsonObject
                    {
                        ["num_bits"] = bits,
                        ["type"] = "int",
                        ["symmetric"] = scheme.Symmetric,
                        ["strategy"] = granularity.Kind switch { GranularityKind.PerChannel => "channel", GranularityKind.PerGroup => "group", _ => "tensor" },
                        ["group_size"] = granularity.Kind == GranularityKind.PerGroup ? granularity.GroupSize : null,
                        ["dynamic"] = false,
                        ["actorder"] = null,
                        ["observer"] = "minmax",
                    },
                    ["input_activations"] = null,
                    ["output_activations"] = null,
                },
            },
            ["ignore"] = new JsonArray([.. reports.Where(r => !r.Quantized && r.Shape.Count == 2 && r.Name.EndsWith(".weight", StringComparison.Ordinal)).Select(r => (JsonNode?)r.Name[..^".weight".Length])]),
            ["kv_cache_scheme"] = null,
        };
        AtomicFile.Write(Path.Combine(outputDirectory, "config.json"), stream =>
        {
            using Utf8JsonWriter writer = new(stream, new JsonWriterOptions { Indented = true });
            config.WriteTo(writer);
        });
    }
}
