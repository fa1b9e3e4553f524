using System.Text.Json.Nodes;

namespace Quantization.Tests.SafeTensors;

public sealed class CheckpointQuantizerTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("checkpoint-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    public static TheoryData<SafeTensorDataType, string> Cases()
    {
        TheoryData<SafeTensorDataType, string> cases = [];
        foreach (SafeTensorDataType type in new[] { SafeTensorDataType.Float16, SafeTensorDataType.BFloat16, SafeTensorDataType.Float32, SafeTensorDataType.Float64 })
        {
            foreach (string scheme in Schemes.Keys)
            {
                cases.Add(type, scheme);
            }
        }

        return cases;
    }

    private static Dictionary<string, QuantizationScheme> Schemes => new()
    {
        ["channel symmetric"] = QuantizationScheme.Int8PerChannel(),
        ["channel asymmetric"] = new(QuantizedType.Int8, symmetric: false, QuantizationGranularity.PerChannel(0)),
        ["group 32"] = QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerGroup(32)),
        ["group 32 asymmetric"] = new(QuantizedType.Int8, symmetric: false, QuantizationGranularity.PerGroup(32)),
        ["tensor"] = QuantizationScheme.Int8PerTensor(),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void QuantizeSaveLoadDequantize_EqualsInMemory_BitForBit(SafeTensorDataType type, string schemeName)
    {
        QuantizationScheme scheme = Schemes[schemeName];
        string input = Path.Combine(_directory, "in"), output = Path.Combine(_directory, "out");
        Dictionary<string, float[]> weights = WriteCheckpoint(input, type);
        CheckpointQuantizationOptions options = new() { Scheme = scheme };
        List<CheckpointProgress> reports = [];
        IReadOnlyList<CheckpointTensorReport> tensors = CheckpointQuantizer.Quantize(input, output, options, new SynchronousProgress(reports.Add));
        Assert.Equal(["layers.0.mlp.weight", "layers.1.mlp.weight"], tensors.Where(t => t.Quantized).Select(t => t.Name));
        Assert.Equal(reports[^1].BytesTotal, reports[^1].BytesDone);

        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(output);
        using SafeTensorsCheckpoint original = SafeTensorsCheckpoint.Open(input);
        foreach ((string name, float[] values) in weights)
        {
            float[] expected = QuantizedTensor.Quantize(values, [96, 64], scheme, name).Dequantize();
            Assert.Equal(expected, CheckpointQuantizer.ReadQuantized(quantized, name, scheme).Dequantize());
        }

        // Excluded tensors are copied byte for byte; the config says what was done.
        Assert.Equal(original.FileOf("embed_tokens.weight").GetBytes("embed_tokens.weight").ToArray(), quantized.FileOf("embed_tokens.weight").GetBytes("embed_tokens.weight").ToArray());
        Assert.Equal(original.FileOf("layers.0.norm.weight").GetBytes("layers.0.norm.weight").ToArray(), quantized.FileOf("layers.0.norm.weight").GetBytes("layers.0.norm.weight").ToArray());
        JsonObject config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
        Assert.Equal("llama", (string?)config["model_type"]);
        Assert.Equal("compressed-tensors", (string?)config["quantization_config"]!["quant_method"]);
        Assert.Equal(scheme.Symmetric, (bool)config["quantization_config"]!["config_groups"]!["group_0"]!["weights"]!["symmetric"]!);
        Assert.Equal(["embed_tokens"], config["quantization_config"]!["ignore"]!.AsArray().Select(n => (string?)n));
        Assert.Equal(scheme.Symmetric ? 0 : 2, quantized.Tensors.Count(t => t.Tensor.Name.EndsWith("_zero_point", StringComparison.Ordinal)));
    }

    [Fact]
    public void NaNInAWeight_FailsByName_AndLeavesNoHalfWrittenShard()
    {
        string input = Path.Combine(_directory, "in"), output = Path.Combine(_directory, "out");
        WriteCheckpoint(input, SafeTensorDataType.Float32, poison: true);
        NonFiniteValueException e = Assert.Throws<NonFiniteValueException>(() => CheckpointQuantizer.Quantize(input, output));
        Assert.Contains("layers.1.mlp.weight", e.Message, StringComparison.Ordinal);
        Assert.Equal([SafeTensorsCheckpoint.ShardFileName(0, 2)], Directory.GetFiles(output).Select(Path.GetFileName));
        Assert.Throws<NotSupportedException>(() => CheckpointQuantizer.Quantize(input, output, new CheckpointQuantizationOptions { Scheme = QuantizationScheme.Int8PerChannel(1) }));

        // Never over a checkpoint, the input least of all.
        Assert.Contains("already holds a checkpoint", Assert.Throws<IOException>(() => CheckpointQuantizer.Quantize(input, input)).Message, StringComparison.Ordinal);
        Assert.Throws<IOException>(() => CheckpointQuantizer.Quantize(input, output));
    }

    [Fact]
    public void OneShardUnderAnotherName_GetsAnIndex_SoTheDirectoryOpens()
    {
        string input = Path.Combine(_directory, "weights.safetensors"), output = Path.Combine(_directory, "out");
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(input, [new("layer.weight", SafeTensorDataType.Float32, [4, 8])]))
        {
            writer.Write<float>([.. Enumerable.Range(0, 32).Select(i => (float)i)]);
            writer.Commit();
        }

        CheckpointQuantizer.Quantize(input, output);
        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(output);
        Assert.Equal(2, quantized.Tensors.Count());
    }

    /// <summary>Two shards with an index and a config: an embedding, a norm and a [96, 64] weight per layer.</summary>
    private static Dictionary<string, float[]> WriteCheckpoint(string directory, SafeTensorDataType type, bool poison = false)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "config.json"), """{"model_type": "llama", "hidden_size": 64}""");
        Dictionary<string, float[]> weights = [];
        Dictionary<string, string> map = [];
        Random random = new(5);
        for (int shard = 0; shard < 2; shard++)
        {
            string file = SafeTensorsCheckpoint.ShardFileName(shard, 2);
            string weight = $"layers.{shard}.mlp.weight", norm = $"layers.{shard}.norm.weight";
            List<(SafeTensorDescriptor Descriptor, float[] Values)> tensors =
            [
                (new(weight, type, [96, 64]), [.. Enumerable.Range(0, 96 * 64).Select(i => (float)((random.NextDouble() - 0.5) * (1 + (i / 64 % 7))))]),
                (new(norm, type, [64]), [.. Enumerable.Range(0, 64).Select(_ => (float)random.NextDouble())]),
            ];
            if (shard == 0)
            {
                tensors.Insert(0, (new("embed_tokens.weight", type, [10, 64]), [.. Enumerable.Range(0, 640).Select(_ => (float)random.NextDouble())]));
            }

            if (poison && shard == 1)
            {
                tensors[0].Values[100] = float.NaN;
            }

            using SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(directory, file), tensors.Select(t => t.Descriptor));
            foreach ((SafeTensorDescriptor descriptor, float[] values) in tensors)
            {
                // Store in the tensor's type; the reference quantizes the values as stored.
                float[] stored = Store(writer, type, values);
                map[descriptor.Name] = file;
                if (descriptor.Name.EndsWith("mlp.weight", StringComparison.Ordinal))
                {
                    weights[descriptor.Name] = stored;
                }
            }

            writer.Commit();
        }

        SafeTensorsCheckpoint.WriteIndex(Path.Combine(directory, SafeTensorsCheckpoint.IndexFileName), map, 0);
        return weights;
    }

    private static float[] Store(SafeTensorsWriter writer, SafeTensorDataType type, float[] values)
    {
        switch (type)
        {
            case SafeTensorDataType.Float16:
                Half[] halves = [.. values.Select(v => (Half)v)];
                writer.Write<Half>(halves);
                return [.. halves.Select(h => (float)h)];
            case SafeTensorDataType.BFloat16:
                ushort[] bfloats = [.. values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))];
                writer.Write<ushort>(bfloats);
                return [.. bfloats.Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16))];
            case SafeTensorDataType.Float64:
                writer.Write<double>([.. values.Select(v => (double)v)]);
                return values;
            default:
                writer.Write<float>(values);
                return values;
        }
    }

    private sealed class SynchronousProgress(Action<CheckpointProgress> report) : IProgress<CheckpointProgress>
    {
        public void Report(CheckpointProgress value) => report(value);
    }
}
