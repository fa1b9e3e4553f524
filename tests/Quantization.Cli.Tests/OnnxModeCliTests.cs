using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx;
using Quantization.Onnx.Tests;

namespace Quantization.Cli.Tests;

/// <summary><c>ptq quantize --mode dynamic</c> and <c>--format matmulnbits</c> on a one-MatMul model.</summary>
public sealed class OnnxModeCliTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-modes-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData(new[] { "--mode", "dynamic" }, "Dynamic W8A8: 1 weights, 1 activations", "MatMulInteger")]
    [InlineData(new[] { "--format", "matmulnbits" }, "Written", "MatMulNBits")]
    [InlineData(new[] { "--mode", "weight-only", "--format", "qdq" }, "Written", "DequantizeLinear")]
    [InlineData(new[] { "--bits", "4", "--group-size", "16" }, "Written", "MatMulNBits")]
    [InlineData(new[] { "--bits", "4", "--format", "qdq", "--granularity", "group", "--group-size", "8" }, "Upgraded the model from opset 13 to 21", "DequantizeLinear")]
    public void Quantize_WritesTheModesOperators_AndOrtRunsThem(string[] flags, string message, string opType)
    {
        string input = Path.Combine(_directory, "matmul.onnx"), output = Path.Combine(_directory, "matmul.int8.onnx");
        Ptq.WriteMatMulModel(input);
        // On a CPU where ONNX Runtime's u8 x s8 kernels saturate, W8A8 models get the uint8 weights its u8 x u8 kernels take.
        string[] weightType = flags.Contains("dynamic") ? OrtInt8Kernels.WeightTypeFlags : [];
        (int code, string stdout, string stderr) = Ptq.Run(["quantize", input, "-o", output, .. flags, .. weightType]);
        Assert.True(code == 0, stderr);
        Assert.Contains(message, stdout, StringComparison.Ordinal);
        Assert.Contains(OnnxModel.Load(output).Proto.Graph.Node, n => n.OpType == opType);

        float[] x = [.. Enumerable.Range(0, 32).Select(i => (float)Math.Sin(i))];
        float[] expected = Run(input, x), actual = Run(output, x);
        double dot = expected.Zip(actual, (a, b) => (double)a * b).Sum();
        double cosine = dot / Math.Sqrt(expected.Sum(a => (double)a * a) * actual.Sum(b => (double)b * b));
        Assert.True(cosine > (flags.Contains("4") ? 0.99 : 0.999), $"cosine {cosine}");
    }

    [Fact]
    public void WeightTypeUInt8_StoresAsymmetricUInt8Weights_ThatOrtRuns()
    {
        string input = Path.Combine(_directory, "matmul.onnx"), output = Path.Combine(_directory, "matmul.uint8.onnx");
        Ptq.WriteMatMulModel(input);
        (int code, _, string stderr) = Ptq.Run("quantize", input, "-o", output, "--mode", "dynamic", "--weight-type", "uint8");
        Assert.True(code == 0, stderr);
        OnnxModel quantized = OnnxModel.Load(output);
        Assert.Equal(4, quantized.Proto.Graph.Node.Single(n => n.OpType == "MatMulInteger").Input.Count);
        Assert.Contains(quantized.Proto.Graph.Initializer, t => t.Dims.Count == 2 && t.DataType == (int)Quantization.Onnx.Protos.TensorProto.Types.DataType.Uint8);

        float[] x = [.. Enumerable.Range(0, 32).Select(i => (float)Math.Sin(i))];
        float[] expected = Run(input, x), actual = Run(output, x);
        double dot = expected.Zip(actual, (a, b) => (double)a * b).Sum();
        double cosine = dot / Math.Sqrt(expected.Sum(a => (double)a * a) * actual.Sum(b => (double)b * b));
        Assert.True(cosine > 0.999, $"cosine {cosine}");
    }

    [Fact]
    public void CombinationsThatMakeNoSense_AreOneLineErrors()
    {
        string model = Path.Combine(_directory, "matmul.onnx"), target = Path.Combine(_directory, "x.onnx");
        Ptq.WriteMatMulModel(model);
        AssertError(1, "--format matmulnbits applies to ONNX models with --mode weight-only", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--format", "matmulnbits"));
        AssertError(1, "--format matmulnbits applies to ONNX models with --mode weight-only", Ptq.Run("quantize", model, "-o", target, "--mode", "static", "--format", "matmulnbits"));
        AssertError(1, "takes no --calibration-data", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--calibration-data", _directory));
        AssertError(1, "--mode dynamic with --smoothquant needs --calibration-data", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--smoothquant"));
        AssertError(1, "--smoothquant applies to --mode static, or --mode dynamic with --calibration-data", Ptq.Run("quantize", model, "-o", target, "--smoothquant", "0.5"));
        AssertError(1, "--explicit-scales applies to --smoothquant", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--explicit-scales"));
        AssertError(1, "they need --mode static", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--observer", "entropy"));
        AssertError(1, "--mode dynamic rounds weights to nearest", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--gptq"));
        AssertError(4, "symmetric int8", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--asymmetric"));
        AssertError(2, "'int4' not recognized", Ptq.Run("quantize", model, "-o", target, "--format", "int4"));
        AssertError(1, "--bits 4 applies to --mode weight-only", Ptq.Run("quantize", model, "-o", target, "--mode", "dynamic", "--bits", "4"));
        AssertError(1, "a power of two of at least 16, not 48", Ptq.Run("quantize", model, "-o", target, "--bits", "4", "--group-size", "48"));
        AssertError(1, "--group-size must be positive", Ptq.Run("quantize", model, "-o", target, "--group-size", "0"));
        AssertError(2, "'3'", Ptq.Run("quantize", model, "-o", target, "--bits", "3"));
        AssertError(1, "--weight-type uint8 applies to 8-bit weights of ONNX models", Ptq.Run("quantize", model, "-o", target, "--bits", "4", "--weight-type", "uint8"));
        AssertError(2, "'uint4'", Ptq.Run("quantize", model, "-o", target, "--weight-type", "uint4"));
        Assert.False(File.Exists(target));

        string checkpoint = Path.Combine(_directory, "model.safetensors");
        Ptq.WriteCheckpoint(checkpoint);
        AssertError(1, "--format matmulnbits applies to ONNX models", Ptq.Run("quantize", checkpoint, "-o", Path.Combine(_directory, "int8"), "--format", "matmulnbits"));
        AssertError(1, "--algorithm gptq runs calibration data through the model", Ptq.Run("quantize", checkpoint, "-o", Path.Combine(_directory, "int8"), "--algorithm", "gptq"));

        (int code, string help, string _) = Ptq.Run("quantize", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--format", help, StringComparison.Ordinal);
        Assert.Contains("dynamic", help, StringComparison.Ordinal);
    }

    private static float[] Run(string path, float[] x)
    {
        using InferenceSession session = new(path);
        using OrtValue value = OrtValue.CreateTensorValueFromMemory(x, [2, 16]);
        using RunOptions options = new();
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(options, ["x"], [value], ["y"]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static void AssertError(int expected, string message, (int ExitCode, string Output, string Error) result)
    {
        Assert.True(expected == result.ExitCode, result.Error);
        Assert.StartsWith("error: ", result.Error, StringComparison.Ordinal);
        Assert.Contains(message, result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Error, StringComparison.Ordinal);
    }
}
