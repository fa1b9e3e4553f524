using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Quantization;

/// <summary>Rules for <see cref="CheckpointQuantizer"/>.</summary>
public sealed class CheckpointQuantizationOptions
{
    /// <summary>
    /// Gets or sets the weights' scheme: int8, symmetric or not, per output channel (axis 0 of the [out, in] weight, the
    /// default), per group along the input axis, or per tensor.
    /// </summary>
    public QuantizationScheme Scheme { get; set; } = QuantizationScheme.Int8PerChannel();

    /// <summary>Gets name patterns of tensors to quantize; when empty, every float tensor of rank 2 is a candidate.</summary>
    public IList<NamePattern> Include { get; } = [];

    /// <summary>Gets name patterns of tensors kept as they are; they win over <see cref="Include"/>. Embeddings, norms and <c>lm_head</c> by default.</summary>
    public IList<NamePattern> Exclude { get; } = [new("*embed*"), new("*norm*"), new("*lm_head*")];

    /// <summary>Checks the scheme.</summary>
    internal void Validate()
    {
        QuantizationGranularity granularity = Scheme.Granularity;
        bool supported = Scheme.Type == QuantizedType.Int8 && granularity.Kind switch
        {
            GranularityKind.PerTensor => true,
            GranularityKind.PerChannel => granularity.Axis == 0,
            GranularityKind.PerGroup => granularity.Axis is 1 or -1,
            _ => false,
        };
        if (!supported)
        {
            throw new NotSupportedException($"Checkpoint weights are quantized to int8 per tensor, per output channel (axis 0) or per group along the input axis; not {Scheme}.");
        }
    }

    /// <summary>Whether a tensor is to be quantized: a 2-D float tensor the patterns select.</summary>
    internal bool Selects(SafeTensorInfo tensor) =>
        tensor.Shape.Count == 2 && tensor.DataType is SafeTensorDataType.Float16 or SafeTensorDataType.BFloat16 or SafeTensorDataType.Float32 or SafeTensorDataType.Float64
        && (Include.Count == 0 || Include.Any(p => p.IsMatch(tensor.Name))) && !Exclude.Any(p => p.IsMatch(tensor.Name));
}

/// <summary>What <see cref="CheckpointQuantizer"/> did to one tensor.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="SourceType">Its element type in the input.</param>
/// <param name="Shape">Its shape.</param>
/// <param name="Quantized">Whether it was quantized (else copied).</param>
/// <param name="BytesBefore">Its bytes in the input.</param>
/// <param name="BytesAfter">Its bytes in the output, with scales and zero points.</param>
public sealed record CheckpointTensorReport(string Name, SafeTensorDataType SourceType, IReadOnlyList<long> Shape, bool Quantized, long BytesBefore, long BytesAfter);

/// <summary>Progress of a checkpoint quantization.</summary>
/// <param name="Tensor">The tensor just finished.</param>
/// <param name="BytesDone">Input bytes processed so far.</param>
/// <param name="BytesTotal">Input bytes in all.</param>
public readonly record struct CheckpointProgress(string Tensor, long BytesDone, long BytesTotal);

/// <summary>
/// Quantizes a safetensors checkpoint (one file or shards with an index) tensor by tensor into the layout of
/// compressed-tensors' int-quantized format, which vLLM-family loaders read: each quantized <c>X</c> becomes int8
/// <c>X</c>, float32 <c>X_scale</c> ([out, 1] per channel, [out, in / group] per group, [1] per tensor) and, when
/// asymmetric, int8 <c>X_zero_point</c>; the other tensors are copied; <c>config.json</c> gets a
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
                long written = options.Selects(tensor) ? WriteQuantized(file, tensor, options.Scheme, writer, cancellationToken) : Copy(file, tensor, writer, cancellationToken);
                reports.Add(new CheckpointTensorReport(tensor.Name, tensor.DataType, tensor.Shape, options.Selects(tensor), tensor.Length, written));
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

    /// <summary>Reads a tensor that <see cref="Quantize"/> wrote back as a <see cref="QuantizedTensor"/>, from its data, scales and zero points.</summary>
    /// <param name="checkpoint">The quantized checkpoint.</param>
    /// <param name="name">The tensor's name.</param>
    /// <param name="scheme">The scheme it was quantized with.</param>
    /// <returns>The tensor; <see cref="QuantizedTensor.Dequantize()"/> restores the floats.</returns>
    /// <exception cref="InvalidDataException">The stored tensors do not have the types and shapes the scheme implies.</exception>
    public static QuantizedTensor ReadQuantized(SafeTensorsCheckpoint checkpoint, string name, QuantizationScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(scheme);
        SafeTensorsFile file = checkpoint.FileOf(name);
        SafeTensorInfo data = file[name];
        if (data.DataType != SafeTensorDataType.Int8 || data.Shape.Count != 2)
        {
            throw new InvalidDataException($"Tensor '{name}' is {data.DataType.HeaderName()} of rank {data.Shape.Count}, not quantized int8 of rank 2.");
        }

        int[] shape = [checked((int)data.Shape[0]), checked((int)data.Shape[1])];
        float[] scales = checkpoint.FileOf(name + "_scale").ReadSingles(name + "_scale");
        int[] zeroPoints = scheme.Symmetric ? new int[scales.Length] : [.. checkpoint.FileOf(name + "_zero_point").GetSpan<sbyte>(name + "_zero_point").ToArray().Select(z => (int)z)];
        return new QuantizedTensor(file.GetBytes(name), shape, scheme, new QuantizationParameters(scales, zeroPoints), name);
    }

    /// <summary>The tensors an input tensor becomes: itself, or int8 data with its scales and zero points.</summary>
    private static IEnumerable<SafeTensorDescriptor> Outputs(SafeTensorInfo tensor, CheckpointQuantizationOptions options)
    {
        if (!options.Selects(tensor))
        {
            yield return new SafeTensorDescriptor(tensor.Name, tensor.DataType, tensor.Shape);
            yield break;
        }

        long[] parameters = ParameterShape(tensor.Shape, options.Scheme.Granularity, tensor.Name);
        yield return new SafeTensorDescriptor(tensor.Name, SafeTensorDataType.Int8, tensor.Shape);
        yield return new SafeTensorDescriptor(tensor.Name + "_scale", SafeTensorDataType.Float32, parameters);
        if (!options.Scheme.Symmetric)
        {
            yield return new SafeTensorDescriptor(tensor.Name + "_zero_point", SafeTensorDataType.Int8, parameters);
        }
    }

    private static long[] ParameterShape(IReadOnlyList<long> shape, QuantizationGranularity granularity, string name) => granularity.Kind switch
    {
        GranularityKind.PerTensor => [1],
        GranularityKind.PerChannel => [shape[0], 1],
        _ when shape[1] % granularity.GroupSize == 0 => [shape[0], shape[1] / granularity.GroupSize],
        _ => throw new ArgumentException(FormattableString.Invariant($"Tensor '{name}' has {shape[1]} inputs, not a multiple of the group size {granularity.GroupSize}.")),
    };

    /// <summary>Quantizes a 2-D tensor a block of rows at a time, writing the int8 rows as they come and the parameters after them.</summary>
    private static long WriteQuantized(SafeTensorsFile file, SafeTensorInfo tensor, QuantizationScheme scheme, SafeTensorsWriter writer, CancellationToken cancellationToken)
    {
        int rows = checked((int)tensor.Shape[0]), columns = checked((int)tensor.Shape[1]);
        int blockRows = Math.Clamp(BlockElements / Math.Max(columns, 1), 1, Math.Max(rows, 1));
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
        long parameterBytes = scales.Count * sizeof(float);
        if (!scheme.Symmetric)
        {
            writer.Write<sbyte>([.. zeroPoints.Select(z => (sbyte)z)]);
            parameterBytes += zeroPoints.Count;
        }

        return ((long)rows * columns) + parameterBytes;
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

    private static long Copy(SafeTensorsFile file, SafeTensorInfo tensor, SafeTensorsWriter writer, CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[Math.Min(tensor.Length, 4 << 20)];
        for (long start = 0; start < tensor.Length; start += buffer.Length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Span<byte> part = buffer.AsSpan(0, (int)Math.Min(buffer.Length, tensor.Length - start));
            file.ReadBytes(tensor, start, part);
            writer.Write(part);
        }

        return tensor.Length;
    }

    /// <summary>Writes <c>config.json</c>: the input's (from its directory) with a <c>quantization_config</c> added, or one holding only that.</summary>
    private static void WriteConfig(string input, string outputDirectory, CheckpointQuantizationOptions options, List<CheckpointTensorReport> reports)
    {
        string directory = Directory.Exists(input) ? input : Path.GetDirectoryName(Path.GetFullPath(input))!;
        string source = Path.Combine(directory, "config.json");
        JsonObject config;
        try
        {
            config = File.Exists(source) ? JsonNode.Parse(File.ReadAllBytes(source)) as JsonObject ?? throw new InvalidDataException($"'{source}' is not a JSON object.") : [];
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}' is not valid JSON: {e.Message}", e);
        }

        QuantizationGranularity granularity = options.Scheme.Granularity;
        config["quantization_config"] = new JsonObject
        {
            ["quant_method"] = "compressed-tensors",
            ["format"] = "int-quantized",
            ["quantization_status"] = "compressed",
            ["config_groups"] = new JsonObject
            {
                ["group_0"] = new JsonObject
                {
                    ["targets"] = new JsonArray("Linear"),
                    ["weights"] = new JsonObject
                    {
                        ["num_bits"] = 8,
                        ["type"] = "int",
                        ["symmetric"] = options.Scheme.Symmetric,
                        ["strategy"] = granularity.Kind switch { GranularityKind.PerChannel => "channel", GranularityKind.PerGroup => "group", _ => "tensor" },
                        ["group_size"] = granularity.Kind == GranularityKind.PerGroup ? granularity.GroupSize : null,
                        ["dynamic"] = false,
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
