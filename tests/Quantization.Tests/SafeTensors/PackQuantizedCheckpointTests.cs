using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;

namespace Quantization.Tests.SafeTensors;

/// <summary>
/// 4-bit checkpoints in compressed-tensors' pack-quantized layout (<c>compressors/pack_quantized/helpers.py</c>): written
/// as the format says, read back bit for bit, and hostile files refused by name.
/// </summary>
public sealed class PackQuantizedCheckpointTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("pack-quantized-").FullName;

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
        ["W4A16 group 128"] = QuantizationScheme.Int4PerGroup(128),
        ["group 32 asymmetric"] = QuantizationScheme.Int4PerGroup(32, symmetric: false),
        ["channel symmetric"] = QuantizationScheme.Int4PerGroup(128).WithGranularity(QuantizationGranularity.PerChannel(0)),
        ["channel asymmetric"] = QuantizationScheme.Int4PerGroup(128, symmetric: false).WithGranularity(QuantizationGranularity.PerChannel(0)),
    };

    /// <summary>K = 203: odd, not a multiple of 8 (the words pad) nor of 32 or 128 (the last group is partial); N = 37: the zero points' last word pads.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void QuantizeSaveLoad_EqualsInMemory_BitForBit(SafeTensorDataType type, string schemeName)
    {
        QuantizationScheme scheme = Schemes[schemeName];
        const int Rows = 37, Columns = 203;
        string input = Path.Combine(_directory, "in"), output = Path.Combine(_directory, "out");
        float[] values = WriteCheckpoint(input, type, Rows, Columns, seed: 11);
        IReadOnlyList<CheckpointTensorReport> reports = CheckpointQuantizer.Quantize(input, output, new CheckpointQuantizationOptions { Scheme = scheme });

        QuantizedTensor expected = Reference(values, [Rows, Columns], scheme, type);
        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(output);
        QuantizationScheme stored = CheckpointQuantizer.ReadScheme(output)!;
        Assert.Equal(scheme, stored);
        QuantizedTensor restored = CheckpointQuantizer.ReadQuantized(quantized, "model.layers.0.mlp.weight", stored);
        Assert.Equal(expected.Data.ToArray(), restored.Data.ToArray());
        Assert.Equal(expected.Parameters.Scales.ToArray(), restored.Parameters.Scales.ToArray());
        Assert.Equal(expected.Parameters.ZeroPoints.ToArray(), restored.Parameters.ZeroPoints.ToArray());
        Assert.Equal(expected.Dequantize(), restored.Dequantize());

        // The layout: int32 words along K, scales in the weight's dtype, zero points along N only when asymmetric, the int64 shape.
        long groups = scheme.Granularity.Kind == GranularityKind.PerGroup ? (Columns + scheme.Granularity.GroupSize - 1) / scheme.Granularity.GroupSize : 1;
        SafeTensorsFile file = quantized.Files[0];
        Assert.Equal(SafeTensorDataType.Int32, file["model.layers.0.mlp.weight_packed"].DataType);
        Assert.Equal([Rows, 26], file["model.layers.0.mlp.weight_packed"].Shape);
        Assert.Equal(type, file["model.layers.0.mlp.weight_scale"].DataType);
        Assert.Equal([Rows, groups], file["model.layers.0.mlp.weight_scale"].Shape);
        Assert.Equal([Rows, Columns], file.GetSpan<long>("model.layers.0.mlp.weight_shape").ToArray());
        Assert.Equal(scheme.Symmetric, !file.Tensors.Any(t => t.Name.EndsWith("_zero_point", StringComparison.Ordinal)));
        if (!scheme.Symmetric)
        {
            Assert.Equal(SafeTensorDataType.Int32, file["model.layers.0.mlp.weight_zero_point"].DataType);
            Assert.Equal([5, groups], file["model.layers.0.mlp.weight_zero_point"].Shape);
        }

        CheckpointTensorReport report = Assert.Single(reports, r => r.Quantized);
        Assert.Equal((Rows * 26 * 4L) + (Rows * groups * type.ElementSize()) + (scheme.Symmetric ? 0 : 5 * groups * 4) + 16, report.BytesAfter);
        Assert.Equal(file.Tensors.Where(t => t.Name.StartsWith("model.layers.0.mlp.weight", StringComparison.Ordinal)).Sum(t => t.Length), report.BytesAfter);
    }

    [Fact]
    public void ManyBlocksOfRows_EqualOneQuantizationOfTheWholeTensor()
    {
        const int Rows = 1031, Columns = 1023; // 1.05 M elements: two blocks of rows
        string input = Path.Combine(_directory, "in"), output = Path.Combine(_directory, "out");
        float[] values = WriteCheckpoint(input, SafeTensorDataType.Float32, Rows, Columns, seed: 12);
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(128, symmetric: false);
        CheckpointQuantizer.Quantize(input, output, new CheckpointQuantizationOptions { Scheme = scheme });
        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(output);
        QuantizedTensor expected = QuantizedTensor.Quantize(values, [Rows, Columns], scheme);
        QuantizedTensor restored = CheckpointQuantizer.ReadQuantized(quantized, "model.layers.0.mlp.weight", scheme);
        Assert.Equal(expected.Data.ToArray(), restored.Data.ToArray());
        Assert.Equal(expected.Parameters.Scales.ToArray(), restored.Parameters.Scales.ToArray());
        Assert.Equal(expected.Parameters.ZeroPoints.ToArray(), restored.Parameters.ZeroPoints.ToArray());
    }

    /// <summary>Values -7.5, -7, ..., 7 quantize to -8 ... 7 with scale 1, so the codes are 0 ... 15: the words are known by hand.</summary>
    [Fact]
    public void Words_HoldCodesQPlus8_LowNibbleFirst_PaddedWithZeros()
    {
        float[] row = [-7.5f, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 1];
        string output = QuantizeOne(row, [1, 17], QuantizationScheme.Int4PerGroup(128).WithGranularity(QuantizationGranularity.PerChannel(0)));
        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(output);
        SafeTensorsFile file = quantized.Files[0];
        Assert.Equal([0x76543210, unchecked((int)0xFEDCBA98), 0x9], file.GetSpan<int>("w.weight_packed").ToArray());
        Assert.Equal([1f], file.GetSpan<float>("w.weight_scale").ToArray());
        float[] expected = [-8, .. row[1..]]; // -7.5 rounds half to even: -8
        Assert.Equal(expected, CheckpointQuantizer.ReadQuantized(quantized, "w.weight", CheckpointQuantizer.ReadScheme(output)!).Dequantize());
    }

    /// <summary>
    /// A row of values at or above zero has the unsigned zero point 0, one at or below zero 15: compressed-tensors' signed
    /// -8 and 7, stored as codes 0 and 15 packed along N (nine rows: two words, the second padded).
    /// </summary>
    [Fact]
    public void ZeroPoints_AtTheExtremes_AreSignedCodesPackedAlongN()
    {
        const int Rows = 9, Columns = 4;
        float[] values = new float[Rows * Columns];
        for (int r = 0; r < Rows; r++)
        {
            for (int c = 0; c < Columns; c++)
            {
                values[(r * Columns) + c] = (r % 2 == 0 ? 1 : -1) * (c + 1) * 0.25f * (r + 1);
            }
        }

        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(128, symmetric: false).WithGranularity(QuantizationGranularity.PerChannel(0));
        string output = QuantizeOne(values, [Rows, Columns], scheme);
        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(output);
        int[] words = quantized.Files[0].GetSpan<int>("w.weight_zero_point").ToArray();
        Assert.Equal([unchecked((int)0xF0F0F0F0), 0], words);
        int[] signed = [.. Enumerable.Range(0, Rows).Select(r => ((words[r / 8] >>> (r % 8 * 4)) & 0xF) - 8)];
        Assert.Equal([-8, 7, -8, 7, -8, 7, -8, 7, -8], signed);

        QuantizedTensor restored = CheckpointQuantizer.ReadQuantized(quantized, "w.weight", scheme);
        Assert.Equal([0, 15, 0, 15, 0, 15, 0, 15, 0], restored.Parameters.ZeroPoints.ToArray());
        Assert.Equal(QuantizedTensor.Quantize(values, [Rows, Columns], scheme).Dequantize(), restored.Dequantize());
    }

    [Fact]
    public void Config_IsCompressedTensorsPackQuantized_W4A16()
    {
        string input = Path.Combine(_directory, "in"), output = Path.Combine(_directory, "out");
        WriteCheckpoint(input, SafeTensorDataType.BFloat16, 8, 256, seed: 13);
        CheckpointQuantizer.Quantize(input, output, new CheckpointQuantizationOptions { Scheme = QuantizationScheme.Int4PerGroup(128) });
        JsonObject config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
        Assert.Equal("llama", (string?)config["model_type"]);
        JsonNode quantization = config["quantization_config"]!;
        Assert.Equal("compressed-tensors", (string?)quantization["quant_method"]);
        Assert.Equal("pack-quantized", (string?)quantization["format"]);
        Assert.Equal("compressed", (string?)quantization["quantization_status"]);
        Assert.Equal(["embed_tokens"], quantization["ignore"]!.AsArray().Select(n => (string?)n));
        JsonObject group = quantization["config_groups"]!["group_0"]!.AsObject();
        Assert.Equal(["Linear"], group["targets"]!.AsArray().Select(n => (string?)n));
        Assert.Null(group["input_activations"]);
        JsonObject weights = group["weights"]!.AsObject();
        Assert.Equal(4, (int)weights["num_bits"]!);
        Assert.Equal("int", (string?)weights["type"]);
        Assert.True((bool)weights["symmetric"]!);
        Assert.Equal("group", (string?)weights["strategy"]);
        Assert.Equal(128, (int)weights["group_size"]!);
        Assert.False((bool)weights["dynamic"]!);
        Assert.True(weights.ContainsKey("actorder") && weights["actorder"] is null);
        Assert.Equal("minmax", (string?)weights["observer"]);
    }

    [Theory]
    [InlineData("""{"config_groups": {"g": {"weights": {"num_bits": 4, "group_size": 128}}}}""", "Int4 group 128 symmetric")]
    [InlineData("""{"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {"weights": {"num_bits": 4, "symmetric": false, "group_size": -1}}}}""", "UInt4 channel asymmetric")]
    [InlineData("""{"config_groups": {"group_0": {"weights": {"num_bits": 8, "strategy": "channel"}}}}""", "Int8 channel symmetric")]
    [InlineData("""{"config_groups": {"group_0": {"weights": {}}}}""", "Int8 tensor symmetric")]
    public void ReadScheme_ToleratesMissingKeys(string quantizationConfig, string expected)
    {
        QuantizationScheme scheme = SchemeOf(quantizationConfig)!;
        string grain = scheme.Granularity.Kind switch
        {
            GranularityKind.PerGroup => $"group {scheme.Granularity.GroupSize}",
            GranularityKind.PerChannel => "channel",
            _ => "tensor",
        };
        Assert.Equal(expected, $"{scheme.Type} {grain} {(scheme.Symmetric ? "symmetric" : "asymmetric")}");
    }

    [Theory]
    [InlineData("""{"quant_method": "awq", "config_groups": {"group_0": {"weights": {}}}}""", "quant_method 'awq'")]
    [InlineData("""{"config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}""", "8-bit float")]
    [InlineData("""{"format": "pack-quantized", "config_groups": {"group_0": {"weights": {"num_bits": 8}}}}""", "format 'pack-quantized'")]
    [InlineData("""{"config_groups": {"group_0": {"weights": {"num_bits": 4}}}}""", "Strategy 'tensor'")]
    [InlineData("""{"config_groups": {"a": {"weights": {}}, "b": {"weights": {}}}}""", "exactly one config group")]
    [InlineData("""{"config_groups": {"group_0": {"weights": {"num_bits": 4, "strategy": "block"}}}}""", "Strategy 'block'")]
    public void ReadScheme_RefusesWhatItCannotRead(string quantizationConfig, string problem) =>
        Assert.Contains(problem, Assert.Throws<NotSupportedException>(() => SchemeOf(quantizationConfig)).Message, StringComparison.Ordinal);

    [Theory]
    [InlineData("""{"config_groups": {"group_0": {"weights": {"num_bits": "four"}}}}""")]
    [InlineData("""{"config_groups": {"group_0": {"weights": {"strategy": "group"}}}}""")]
    [InlineData("\"pack-quantized\"")]
    public void ReadScheme_MalformedConfig_IsInvalidData(string quantizationConfig) =>
        Assert.Contains("quantization_config is malformed", Assert.Throws<InvalidDataException>(() => SchemeOf(quantizationConfig)).Message, StringComparison.Ordinal);

    [Fact]
    public void ReadScheme_WithoutAConfig_IsNull()
    {
        Assert.Null(CheckpointQuantizer.ReadScheme(Path.Combine(_directory, "model.safetensors")));
        File.WriteAllText(Path.Combine(_directory, "config.json"), """{"model_type": "llama"}""");
        Assert.Null(CheckpointQuantizer.ReadScheme(_directory));
    }

    [Fact]
    public void Unsupported4BitSchemes_AreRefusedBeforeAnythingIsWritten()
    {
        string input = Path.Combine(_directory, "in"), output = Path.Combine(_directory, "out");
        WriteCheckpoint(input, SafeTensorDataType.Float32, 4, 16, seed: 14);
        foreach (QuantizationScheme scheme in new[]
        {
            QuantizationScheme.Int4PerGroup(128).WithGranularity(QuantizationGranularity.PerTensor),
            new QuantizationScheme(QuantizedType.Int4, symmetric: false, QuantizationGranularity.PerGroup(8)),
            QuantizationScheme.Int4PerGroup(8).WithGranularity(QuantizationGranularity.PerGroup(8, axis: 0)),
        })
        {
            Assert.Contains("4 bits (symmetric Int4 or asymmetric UInt4)", Assert.Throws<NotSupportedException>(() => CheckpointQuantizer.Quantize(input, output, new CheckpointQuantizationOptions { Scheme = scheme })).Message, StringComparison.Ordinal);
            Assert.False(Directory.Exists(output));
        }
    }

    /// <summary>A float16 group so small that its scale underflows float16 is stored with scale 1, as a zero range is: its values round to zero.</summary>
    [Fact]
    public void Float16ScaleThatUnderflows_IsStoredAsOne()
    {
        string input = Path.Combine(_directory, "in"), output = Path.Combine(_directory, "out");
        Directory.CreateDirectory(input);
        Half tiny = BitConverter.UInt16BitsToHalf(2); // 1.2e-7, a subnormal: 2 * 1.2e-7 / 15 underflows float16
        Half[] values = [tiny, tiny, tiny, tiny, (Half)0.5f, (Half)(-0.25f), (Half)1, (Half)0];
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(input, "model.safetensors"), [new("w.weight", SafeTensorDataType.Float16, [2, 4])]))
        {
            writer.Write<Half>(values);
            writer.Commit();
        }

        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(4);
        CheckpointQuantizer.Quantize(input, output, new CheckpointQuantizationOptions { Scheme = scheme });
        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(output);
        Assert.Equal([(Half)1, (Half)(float)(2.0 / 15)], quantized.Files[0].GetSpan<Half>("w.weight_scale").ToArray());
        float[] restored = CheckpointQuantizer.ReadQuantized(quantized, "w.weight", scheme).Dequantize();
        Assert.Equal([0f, 0, 0, 0], restored[..4]);
    }

    public static TheoryData<string, string, string> HostileFiles() => new()
    {
        { "truncated weight_packed", "packed [3, 1]", "Tensor 'w.weight_packed' is I32 [3, 1], but the shape [3, 17] in 'w.weight_shape' needs I32 [3, 3]" },
        { "weight_shape disagrees", "shape [3, 25]", "Tensor 'w.weight_packed' is I32 [3, 3], but the shape [3, 25] in 'w.weight_shape' needs I32 [3, 4]" },
        { "rows disagree", "shape [4, 17]", "Tensor 'w.weight_packed' is I32 [3, 3], but the shape [4, 17]" },
        { "packed as bytes", "packed U8", "Tensor 'w.weight_packed' is U8 [3, 12]" },
        { "negative dimension", "shape [-3, 17]", "Tensor 'w.weight_shape' holds the shape [-3, 17]: both dimensions must be positive" },
        { "zero dimension", "shape [3, 0]", "Tensor 'w.weight_shape' holds the shape [3, 0]" },
        { "huge dimensions", "shape [4294967296, 4294967296]", "Tensor 'w.weight_shape' holds the shape [4294967296, 4294967296]" },
        { "shape as floats", "shape F32", "Tensor 'w.weight_shape' is F32 [2], not the I64 [2] original shape" },
        { "shape of rank 2", "shape [1, 2]", "Tensor 'w.weight_shape' is I64 [1, 2]" },
        { "missing shape", "no shape", "Tensor 'w.weight_shape' of a quantized weight is missing" },
        { "missing scales", "no scale", "Tensor 'w.weight_scale' of a quantized weight is missing" },
        { "scales of the wrong shape", "scale [3, 2]", "Tensor 'w.weight_scale' is F32 [3, 2], not the float [3, 1] scales" },
        { "integer scales", "scale I32", "Tensor 'w.weight_scale' is I32 [3, 1]" },
        { "NaN scale", "scale NaN", "Tensor 'w.weight_scale': scale NaN at index 1 is negative or not finite" },
        { "negative scale", "scale -1", "Tensor 'w.weight_scale': scale -1 at index 1 is negative or not finite" },
        { "missing zero points", "no zero_point", "Tensor 'w.weight_zero_point' of a quantized weight is missing" },
        { "zero points not packed", "zero_point I32 [3, 1]", "Tensor 'w.weight_zero_point' is I32 [3, 1]; the zero points of a [3, ...] weight with 1 groups a row are I32 [1, 1]" },
        { "zero point above 7", "zero_point I8 8", "Tensor 'w.weight_zero_point': zero point 8 at index 1 is outside [-8, 7]" },
        { "zero point below -8", "zero_point I8 -9", "Tensor 'w.weight_zero_point': zero point -9 at index 1 is outside [-8, 7]" },
    };

    /// <summary>A valid asymmetric [3, 17] per-channel weight with one part broken at a time.</summary>
    [Theory]
    [MemberData(nameof(HostileFiles))]
    public void HostileCheckpoint_IsRefusedNamingTheTensor(string label, string damage, string problem)
    {
        Assert.NotEmpty(label);
        string path = Path.Combine(_directory, "model.safetensors");
        List<(SafeTensorDescriptor Descriptor, byte[] Bytes)> tensors =
        [
            (new("w.weight_packed", SafeTensorDataType.Int32, [3, 3]), Bytes<int>([0x76543210, 0x7654321, 0x1, 0, 0, 0, -1, -1, 0xF])),
            (new("w.weight_scale", SafeTensorDataType.Float32, [3, 1]), Bytes<float>([0.5f, 1, 2])),
            (new("w.weight_zero_point", SafeTensorDataType.Int32, [1, 1]), Bytes<int>([0x0F8])),
            (new("w.weight_shape", SafeTensorDataType.Int64, [2]), Bytes<long>([3, 17])),
        ];
        Damage(tensors, damage);
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(path, tensors.Select(t => t.Descriptor)))
        {
            tensors.ForEach(t => writer.Write(t.Bytes));
            writer.Commit();
        }

        using SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(path);
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(128, symmetric: false).WithGranularity(QuantizationGranularity.PerChannel(0));
        if (damage == "none")
        {
            Assert.Equal([8, 15, 0], CheckpointQuantizer.ReadQuantized(checkpoint, "w.weight", scheme).Parameters.ZeroPoints.ToArray());
            return;
        }

        InvalidDataException e = Assert.Throws<InvalidDataException>(() => CheckpointQuantizer.ReadQuantized(checkpoint, "w.weight", scheme));
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HostileCheckpoint_Undamaged_Reads() => HostileCheckpoint_IsRefusedNamingTheTensor("undamaged", "none", string.Empty);

    private static void Damage(List<(SafeTensorDescriptor Descriptor, byte[] Bytes)> tensors, string damage)
    {
        void Set(string suffix, SafeTensorDataType type, long[] shape, byte[] bytes)
        {
            int index = tensors.FindIndex(t => t.Descriptor.Name == "w.weight" + suffix);
            tensors[index] = (new SafeTensorDescriptor("w.weight" + suffix, type, shape), bytes);
        }

        void Remove(string suffix) => tensors.RemoveAll(t => t.Descriptor.Name == "w.weight" + suffix);

        switch (damage)
        {
            case "none":
                break;
            case "packed [3, 1]":
                Set("_packed", SafeTensorDataType.Int32, [3, 1], Bytes<int>([1, 2, 3]));
                break;
            case "packed U8":
                Set("_packed", SafeTensorDataType.UInt8, [3, 12], new byte[36]);
                break;
            case "no shape":
                Remove("_shape");
                break;
            case "shape F32":
                Set("_shape", SafeTensorDataType.Float32, [2], Bytes<float>([3, 17]));
                break;
            case "shape [1, 2]":
                Set("_shape", SafeTensorDataType.Int64, [1, 2], Bytes<long>([3, 17]));
                break;
            case string s when s.StartsWith("shape [", StringComparison.Ordinal):
                long[] dims = [.. s["shape [".Length..^1].Split(", ").Select(d => long.Parse(d, CultureInfo.InvariantCulture))];
                Set("_shape", SafeTensorDataType.Int64, [2], Bytes<long>(dims));
                break;
            case "no scale":
                Remove("_scale");
                break;
            case "scale [3, 2]":
                Set("_scale", SafeTensorDataType.Float32, [3, 2], Bytes<float>([1, 1, 1, 1, 1, 1]));
                break;
            case "scale I32":
                Set("_scale", SafeTensorDataType.Int32, [3, 1], Bytes<int>([1, 1, 1]));
                break;
            case "scale NaN":
                Set("_scale", SafeTensorDataType.Float32, [3, 1], Bytes<float>([1, float.NaN, 1]));
                break;
            case "scale -1":
                Set("_scale", SafeTensorDataType.Float32, [3, 1], Bytes<float>([1, -1, 1]));
                break;
            case "no zero_point":
                Remove("_zero_point");
                break;
            case "zero_point I32 [3, 1]":
                Set("_zero_point", SafeTensorDataType.Int32, [3, 1], Bytes<int>([0, 7, 8]));
                break;
            case "zero_point I8 8":
                Set("_zero_point", SafeTensorDataType.Int8, [3, 1], Bytes<sbyte>([0, 8, 0]));
                break;
            case "zero_point I8 -9":
                Set("_zero_point", SafeTensorDataType.Int8, [3, 1], Bytes<sbyte>([0, -9, 0]));
                break;
            default:
                throw new ArgumentException(damage, nameof(damage));
        }
    }

    private static byte[] Bytes<T>(T[] values)
        where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>What the checkpoint must hold: scales as the weight's dtype stores them, and the values quantized with those.</summary>
    private static QuantizedTensor Reference(float[] values, int[] shape, QuantizationScheme scheme, SafeTensorDataType type)
    {
        QuantizedTensor dynamic = QuantizedTensor.Quantize(values, shape, scheme);
        float[] scales = [.. dynamic.Parameters.Scales.ToArray().Select(s => type switch
        {
            SafeTensorDataType.Float16 => (float)(Half)s,
            SafeTensorDataType.BFloat16 => BFloat16(s),
            _ => s,
        })];
        return QuantizedTensor.Quantize(values, shape, scheme, new QuantizationParameters(scales, dynamic.Parameters.ZeroPoints));
    }

    /// <summary>float32 to bfloat16 and back, round to nearest even, written out the long way.</summary>
    private static float BFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value), upper = bits >> 16, lower = bits & 0xFFFF;
        upper += lower > 0x8000 || (lower == 0x8000 && (upper & 1) == 1) ? 1u : 0u;
        return BitConverter.UInt32BitsToSingle(upper << 16);
    }

    private QuantizationScheme? SchemeOf(string quantizationConfig)
    {
        string directory = Directory.CreateDirectory(Path.Combine(_directory, "config")).FullName;
        File.WriteAllText(Path.Combine(directory, "config.json"), $$"""{"model_type": "llama", "quantization_config": {{quantizationConfig}}}""");
        return CheckpointQuantizer.ReadScheme(directory);
    }

    /// <summary>Quantizes one float32 tensor named <c>w.weight</c> and returns the output directory.</summary>
    private string QuantizeOne(float[] values, long[] shape, QuantizationScheme scheme)
    {
        string input = Path.Combine(_directory, "one"), output = Path.Combine(_directory, "one-out");
        Directory.CreateDirectory(input);
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(input, "model.safetensors"), [new("w.weight", SafeTensorDataType.Float32, shape)]))
        {
            writer.Write<float>(values);
            writer.Commit();
        }

        CheckpointQuantizer.Quantize(input, output, new CheckpointQuantizationOptions { Scheme = scheme });
        return output;
    }

    /// <summary>One file with a config: an embedding (kept), a norm (kept) and a [rows, columns] weight of the given type; returns the weight as stored.</summary>
    private static float[] WriteCheckpoint(string directory, SafeTensorDataType type, int rows, int columns, int seed)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "config.json"), """{"model_type": "llama"}""");
        Random random = new(seed);
        float[] weight = [.. Enumerable.Range(0, rows * columns).Select(i => (float)((random.NextDouble() - 0.5) * (1 + (i % 13))))];
        (string Name, long[] Shape, float[] Values)[] tensors =
        [
            ("embed_tokens.weight", [5, columns], [.. Enumerable.Range(0, 5 * columns).Select(_ => (float)random.NextDouble())]),
            ("model.layers.0.mlp.weight", [rows, columns], weight),
            ("model.norm.weight", [columns], [.. Enumerable.Range(0, columns).Select(_ => 1f)]),
        ];
        using SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(directory, "model.safetensors"), tensors.Select(t => new SafeTensorDescriptor(t.Name, type, t.Shape)));
        float[] stored = [];
        foreach ((string name, long[] _, float[] values) in tensors)
        {
            float[] rounded = type switch
            {
                SafeTensorDataType.Float16 => [.. values.Select(v => (float)(Half)v)],
                SafeTensorDataType.BFloat16 => [.. values.Select(v => BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(v) & 0xFFFF0000))],
                _ => values,
            };
            switch (type)
            {
                case SafeTensorDataType.Float16:
                    writer.Write<Half>([.. rounded.Select(v => (Half)v)]);
                    break;
                case SafeTensorDataType.BFloat16:
                    writer.Write<ushort>([.. rounded.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))]);
                    break;
                case SafeTensorDataType.Float64:
                    writer.Write<double>([.. rounded.Select(v => (double)v)]);
                    break;
                default:
                    writer.Write<float>(rounded);
                    break;
            }

            if (name == "model.layers.0.mlp.weight")
            {
                stored = rounded;
            }
        }

        writer.Commit();
        return stored;
    }
}
