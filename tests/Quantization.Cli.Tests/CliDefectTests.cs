using System.Runtime.InteropServices;
using System.Text.Json.Nodes;

using Google.Protobuf;

using Quantization.Onnx;
using Quantization.Onnx.Protos;

namespace Quantization.Cli.Tests;

/// <summary>Regressions of ptq found by review: the report on Constant-node weights, library wording in errors, and output redirected to a file.</summary>
public sealed class CliDefectTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-defects-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Report_OnConstantNodeWeights_ListsEveryQuantizedWeight_WithTheBytesQuantizeCounts()
    {
        string input = Path.Combine(_directory, "constants.onnx"), output = Path.Combine(_directory, "constants.int8.onnx");
        File.WriteAllBytes(input, ConstantWeightModel().ToByteArray());
        (int code, string stdout, string stderr) = Ptq.Run("quantize", input, "-o", output);
        Assert.True(code == 0, stderr);

        // What quantize reports: the library's own report per weight.
        OnnxModel model = OnnxModel.Load(input);
        IReadOnlyList<OnnxWeightReport> expected = OnnxWeightQuantizer.Quantize(model);
        Assert.Equal(3, expected.Count);

        (code, stdout, stderr) = Ptq.Run("report", output, "--original", input, "--json");
        Assert.True(code == 0, stderr);
        JsonArray tensors = JsonNode.Parse(stdout)!["tensors"]!.AsArray();
        Assert.Equal(expected.Select(r => r.Weight).Order(StringComparer.Ordinal), tensors.Select(t => (string)t!["name"]!).Order(StringComparer.Ordinal));
        foreach (OnnxWeightReport weight in expected)
        {
            JsonNode tensor = tensors.Single(t => (string)t!["name"]! == weight.Weight)!;
            Assert.Equal((weight.Report.BytesBefore, weight.Report.BytesAfter), ((long)tensor["bytesBefore"]!, (long)tensor["bytesAfter"]!));
            Assert.Equal(weight.Report.CosineSimilarity, (double)tensor["cosineSimilarity"]!, 1e-9);
        }
    }

    [Fact]
    public void Report_OnInitializerWeights_CountsTheBytesQuantizeCounts()
    {
        string input = Path.Combine(_directory, "matmul.onnx"), output = Path.Combine(_directory, "matmul.int8.onnx");
        Ptq.WriteMatMulModel(input);
        (int code, _, string stderr) = Ptq.Run("quantize", input, "-o", output);
        Assert.True(code == 0, stderr);
        OnnxWeightReport expected = Assert.Single(OnnxWeightQuantizer.Quantize(OnnxModel.Load(input)));

        (code, string stdout, stderr) = Ptq.Run("report", output, "--original", input, "--json");
        Assert.True(code == 0, stderr);
        JsonNode tensor = Assert.Single(JsonNode.Parse(stdout)!["tensors"]!.AsArray())!;
        Assert.Equal((expected.Report.BytesBefore, expected.Report.BytesAfter), ((long)tensor["bytesBefore"]!, (long)tensor["bytesAfter"]!));
    }

    [Theory]
    [InlineData(new[] { "--weight-ops", "Relu" }, "--weight-ops")]
    [InlineData(new[] { "--mode", "dynamic", "--weight-ops", "Conv" }, "--weight-ops")]
    [InlineData(new[] { "--mode", "static", "--calibration-data", "CALIBRATION", "--smoothquant", "1.5" }, "--smoothquant")]
    [InlineData(new[] { "--mode", "static", "--calibration-data", "CALIBRATION", "--keep-float", "auto", "--target-cosine", "2" }, "--target-cosine")]
    [InlineData(new[] { "--mode", "static", "--calibration-data", "CALIBRATION", "--observer", "percentile", "--percentile", "120" }, "--percentile")]
    [InlineData(new[] { "--mode", "static", "--calibration-data", "CALIBRATION", "--granularity", "group" }, "--granularity")]
    [InlineData(new[] { "--mode", "dynamic", "--granularity", "group" }, "--granularity")]
    [InlineData(new[] { "--mode", "dynamic", "--asymmetric" }, "--asymmetric")]
    [InlineData(new[] { "--gptq" }, "--calibration-data")]
    public void Errors_NameTheFlags_NotTheLibrarysApi(string[] flags, string flag)
    {
        string model = Path.Combine(_directory, "matmul.onnx"), calibration = Directory.CreateDirectory(Path.Combine(_directory, "calibration")).FullName;
        Ptq.WriteMatMulModel(model);
        for (int i = 0; i < 4; i++)
        {
            float[] x = [.. Enumerable.Range(0, 32).Select(j => (float)Math.Sin(i + j))];
            NpyWriter.Write(Path.Combine(calibration, $"{i}.npy"), NumPyArray.Create<float>(x, 2, 16));
        }

        (int code, string _, string stderr) = Ptq.Run(["quantize", model, "-o", Path.Combine(_directory, "x.onnx"), .. flags.Select(f => f == "CALIBRATION" ? calibration : f)]);
        Assert.NotEqual(0, code);
        Assert.StartsWith("error: ", stderr, StringComparison.Ordinal);
        Assert.Contains(flag, stderr, StringComparison.Ordinal);
        foreach (string api in new[] { "QuantizeAsync", "OpTypes", "Options", "to null", "(Parameter", "Actual value", "Alpha ", "Gptq", "Scheme" })
        {
            Assert.DoesNotContain(api, stderr, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void RedirectedOutput_GetsWholeProgressLines_AndTheStaticSummary()
    {
        // A checkpoint's progress: a line per tensor, no carriage returns or escape sequences in the file.
        string checkpoint = Path.Combine(_directory, "model.safetensors");
        Ptq.WriteCheckpoint(checkpoint);
        (int code, string stdout, string stderr) = Ptq.Run("quantize", checkpoint, "-o", Path.Combine(_directory, "int8"), "--stats");
        Assert.True(code == 0, stderr);
        Assert.DoesNotContain('\r', stdout);
        Assert.DoesNotContain('\u001b', stdout);
        string[] lines = stdout.Split('\n');
        foreach (string tensor in new[] { "model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.norm.weight" })
        {
            Assert.Contains(lines, l => l.StartsWith('[') && l.Contains(tensor, StringComparison.Ordinal));
        }

        Assert.Contains(lines, l => l.StartsWith("stats: ", StringComparison.Ordinal) && l.Contains("GB/s", StringComparison.Ordinal));

        // Static quantization: the summary counts the raised weight scales; --stats after calibration prints no throughput.
        string model = Path.Combine(_directory, "matmul.onnx"), calibration = Directory.CreateDirectory(Path.Combine(_directory, "calibration")).FullName;
        Ptq.WriteMatMulModel(model);
        NpyWriter.Write(Path.Combine(calibration, "0.npy"), NumPyArray.Create<float>([.. Enumerable.Range(0, 32).Select(j => (float)Math.Cos(j))], 2, 16));
        (code, stdout, stderr) = Ptq.Run("quantize", model, "-o", Path.Combine(_directory, "static.onnx"), "--mode", "static", "--calibration-data", calibration, "--stats");
        Assert.True(code == 0, stderr);
        Assert.Contains("0 weight scales raised", stdout, StringComparison.Ordinal);
        string stats = Assert.Single(stdout.Split('\n'), l => l.StartsWith("stats: ", StringComparison.Ordinal));
        Assert.DoesNotContain("GB/s", stats, StringComparison.Ordinal);
    }

    /// <summary>x [2, 16] -> MatMul(Constant w1 [16, 8]) -> Gemm(Constant w2 [8, 8], transB) -> MatMul(Constant w3 [8, 4]) = y; no initializers.</summary>
    private static ModelProto ConstantWeightModel()
    {
        Random random = new(7);
        NodeProto Constant(string name, params long[] dims)
        {
            float[] values = [.. Enumerable.Range(0, (int)(dims[0] * dims[1])).Select(_ => (float)(random.NextDouble() - 0.5))];
            TensorProto tensor = new() { Name = name, DataType = (int)TensorProto.Types.DataType.Float, Dims = { dims }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan())) };
            return new NodeProto { Name = name + "_constant", OpType = "Constant", Output = { name }, Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = tensor } } };
        }

        return new ModelProto
        {
            IrVersion = 8,
            OpsetImport = { new OperatorSetIdProto { Version = 13 } },
            Graph = new GraphProto
            {
                Name = "constants",
                Node =
                {
                    Constant("w1", 16, 8),
                    Constant("w2", 8, 8),
                    Constant("w3", 8, 4),
                    new NodeProto { Name = "mm1", OpType = "MatMul", Input = { "x", "w1" }, Output = { "h1" } },
                    new NodeProto { Name = "gemm", OpType = "Gemm", Input = { "h1", "w2" }, Output = { "h2" }, Attribute = { new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } },
                    new NodeProto { Name = "mm3", OpType = "MatMul", Input = { "h2", "w3" }, Output = { "y" } },
                },
                Input = { Value("x", 2, 16) },
                Output = { Value("y", 2, 4) },
            },
        };
    }

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        TensorShapeProto shape = new();
        shape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
    }
}
