using System.Text.Json.Nodes;

namespace Quantization.Cli.Tests;

public sealed class CliTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Safetensors_QuantizeInspectReport()
    {
        string input = Path.Combine(_directory, "model.safetensors"), output = Path.Combine(_directory, "int8");
        Ptq.WriteCheckpoint(input);
        (int code, string stdout, string stderr) = Ptq.Run("quantize", input, "-o", output, "--granularity", "group", "--group-size", "16", "--asymmetric");
        Assert.True(code == 0, stderr);
        Assert.Contains("Quantized 2 of 4 tensors", stdout, StringComparison.Ordinal);

        (code, stdout, stderr) = Ptq.Run("inspect", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("model.layers.0.mlp.up_proj.weight_scale", stdout, StringComparison.Ordinal);
        Assert.Contains("int8, scales [64, 1], zero points", stdout, StringComparison.Ordinal);

        (code, stdout, stderr) = Ptq.Run("report", output, "--original", input, "--json");
        Assert.True(code == 0, stderr);
        JsonArray tensors = JsonNode.Parse(stdout)!["tensors"]!.AsArray();
        Assert.Equal(2, tensors.Count);
        Assert.All(tensors, t => Assert.True((double)t!["cosineSimilarity"]! > 0.9999));
    }

    [Fact]
    public void Safetensors_FourBit_PackQuantized_QuantizeInspectReport()
    {
        string input = Path.Combine(_directory, "model.safetensors"), output = Path.Combine(_directory, "int4");
        Ptq.WriteCheckpoint(input);
        (int code, string stdout, string stderr) = Ptq.Run("quantize", input, "-o", output, "--bits", "4", "--group-size", "16", "--asymmetric");
        Assert.True(code == 0, stderr);
        Assert.Contains("Quantized 2 of 4 tensors", stdout, StringComparison.Ordinal);
        Assert.Contains("Layout: compressed-tensors pack-quantized, 4-bit asymmetric (UInt4), group 16.", stdout, StringComparison.Ordinal);

        // [16, 64] fp16 in groups of 16: 16 x 8 words, 16 x 4 F16 scales, 2 x 4 zero-point words, the shape: 512 + 128 + 32 + 16 bytes.
        (code, stdout, stderr) = Ptq.Run("inspect", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("quantization_config: compressed-tensors pack-quantized, 4-bit asymmetric (UInt4), group 16", stdout, StringComparison.Ordinal);
        Assert.Contains("4-bit packed [16, 64], F16 scales [16, 4], zero points; group 16; 688 bytes with parameters", stdout, StringComparison.Ordinal);

        (code, stdout, stderr) = Ptq.Run("report", output, "--original", input, "--json");
        Assert.True(code == 0, stderr);
        JsonArray tensors = JsonNode.Parse(stdout)!["tensors"]!.AsArray();
        Assert.Equal(["model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"], tensors.Select(t => (string?)t!["name"]));
        Assert.All(tensors, t => Assert.Equal((2048L, 688L), ((long)t!["bytesBefore"]!, (long)t["bytesAfter"]!)));
        Assert.All(tensors, t => Assert.True((double)t!["cosineSimilarity"]! > 0.99));

        (code, stdout, stderr) = Ptq.Run("report", output, "--original", input);
        Assert.True(code == 0, stderr);
        Assert.Contains("compressed-tensors pack-quantized, 4-bit asymmetric (UInt4), group 16", stdout, StringComparison.Ordinal);

        // W4A16 by default: symmetric groups of 128.
        (code, stdout, stderr) = Ptq.Run("quantize", input, "-o", Path.Combine(_directory, "w4a16"), "--bits", "4");
        Assert.True(code == 0, stderr);
        Assert.Contains("Layout: compressed-tensors pack-quantized, 4-bit symmetric (Int4), group 128.", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Safetensors_AlgorithmsThatNeedAForwardPass_AndOtherBitWidths_AreRefused()
    {
        string input = Path.Combine(_directory, "model.safetensors");
        Ptq.WriteCheckpoint(input);
        (int code, string _, string stderr) = Ptq.Run("quantize", input, "-o", Path.Combine(_directory, "gptq"), "--bits", "4", "--algorithm", "gptq");
        Assert.Equal(1, code);
        Assert.Contains("--algorithm gptq runs calibration data through the model, so it applies to ONNX models", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_directory, "gptq")));

        (int usage, string _, string error) = Ptq.Run("quantize", input, "-o", Path.Combine(_directory, "x"), "--bits", "3");
        Assert.Equal(2, usage);
        Assert.Contains("'3'", error, StringComparison.Ordinal);
        (int unsupported, string _, string perTensor) = Ptq.Run("quantize", input, "-o", Path.Combine(_directory, "x"), "--bits", "4", "--granularity", "tensor");
        Assert.Equal(4, unsupported);
        Assert.Contains("4 bits (symmetric Int4 or asymmetric UInt4) per output channel or per group", perTensor, StringComparison.Ordinal);
    }

    [Fact]
    public void Onnx_QuantizeAndReport()
    {
        string input = Path.Combine(_directory, "matmul.onnx"), output = Path.Combine(_directory, "matmul.int8.onnx");
        Ptq.WriteMatMulModel(input);
        (int code, string stdout, string stderr) = Ptq.Run("quantize", input, "-o", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("Written", stdout, StringComparison.Ordinal);
        (code, stdout, stderr) = Ptq.Run("report", output, "--original", input);
        Assert.True(code == 0, stderr);
        Assert.Contains("w ", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Errors_AreOneLine_WithMeaningfulExitCodes()
    {
        string model = Path.Combine(_directory, "matmul.onnx"), broken = Path.Combine(_directory, "broken.safetensors");
        Ptq.WriteMatMulModel(model);
        File.WriteAllBytes(broken, [16, 0, 0, 0, 0, 0, 0, 0, .. "{\"a\":[1,2,3]}   "u8]);

        // Exit codes: 1 invalid input, 2 usage, 3 I/O, 4 not supported.
        AssertError(3, "Could not find file", Ptq.Run("quantize", Path.Combine(_directory, "missing.onnx"), "-o", "x.onnx"));
        AssertError(2, "--output", Ptq.Run("quantize", model));
        AssertError(2, "'rows' not recognized", Ptq.Run("quantize", model, "-o", "x.onnx", "--granularity", "rows"));
        AssertError(4, "symmetric int8", Ptq.Run("quantize", model, "-o", Path.Combine(_directory, "x.onnx"), "--mode", "dynamic", "--granularity", "group"));
        AssertError(1, "is not an object", Ptq.Run("inspect", broken));
        Assert.False(File.Exists(Path.Combine(_directory, "x.onnx")));

        (int code, string _, string verbose) = Ptq.Run("inspect", broken, "--verbose");
        Assert.Equal(1, code);
        Assert.Contains("   at ", verbose, StringComparison.Ordinal);

        (code, string help, string _) = Ptq.Run("quantize", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--calibration-data", help, StringComparison.Ordinal);
    }

    private static void AssertError(int expected, string message, (int ExitCode, string Output, string Error) result)
    {
        Assert.Equal(expected, result.ExitCode);
        string[] lines = result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("error: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(message, result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Error, StringComparison.Ordinal);
    }
}
