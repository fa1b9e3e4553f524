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
        AssertError(4, "per-tensor or per-channel", Ptq.Run("quantize", model, "-o", Path.Combine(_directory, "x.onnx"), "--granularity", "group"));
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
