using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary><see cref="OnnxWeightQuantizationOptions.RangeSearch"/>: the searched weight reaches ONNX Runtime as QDQ and as MatMulNBits.</summary>
public class WeightRangeSearchOnnxTests
{
    [Theory]
    [InlineData(false)] // int4 DequantizeLinear-21 in blocks along K
    [InlineData(true)] // MatMulNBits
    public void MatMul_OrtRunsTheSearchedWeight_BitForBit(bool matMulNBits)
    {
        const int K = 64, N = 16;
        float[] w = Random(K * N, 11, 2);
        ModelProto proto = Model("matmul", [Node("MatMul", "layer", ["a", "w"], ["y"])], [Tensor("w", w, K, N)], [Value("a", K, K)], [Value("y", K, N)], opset: 21);
        proto.IrVersion = 10;
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(16, symmetric: false);
        OnnxWeightQuantizationOptions options = new() { Scheme = scheme, RangeSearch = new WeightRangeSearch(), MatMulNBits = matMulNBits ? new MatMulNBitsOptions { BlockSize = 16, AccuracyLevel = 1 } : null };
        OnnxWeightReport report = Assert.Single(OnnxWeightQuantizer.Quantize(model, options));

        // The search on the weight's [N, K] rows (blocks along K), transposed back to MatMul's [K, N].
        float[] rows = OnnxWeightQuantizer.Transpose(w, K, N);
        QuantizedTensor searched = new WeightRangeSearch().Quantize(rows, [N, K], scheme.WithGranularity(QuantizationGranularity.PerGroup(16, axis: 1)));
        float[] expected = OnnxWeightQuantizer.Transpose(searched.Dequantize(), N, K);
        float[] plain = OnnxWeightQuantizer.Transpose(QuantizedTensor.Quantize(rows, [N, K], searched.Scheme).Dequantize(), N, K);
        Assert.NotEqual(plain, expected);

        float[] identity = new float[K * K];
        for (int i = 0; i < K; i++)
        {
            identity[(i * K) + i] = 1;
        }

        float[] actual = RunSingle(model.Proto.ToByteArray(), "a", identity, [K, K], GraphOptimizationLevel.ORT_DISABLE_ALL);
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));
        Assert.True(report.Report.SqnrDb > TensorErrorReport.Compare("w", w, plain, 0, 0).SqnrDb, "The search lowers the weight's error.");
    }

    [Fact]
    public void Options_RangeSearchInsideGptq_IsRefused()
    {
        ModelProto proto = Model("matmul", [Node("MatMul", "layer", ["a", "w"], ["y"])], [Tensor("w", Random(64, 1), 8, 8)], [Value("a", 2, 8)], [Value("y", 2, 8)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxWeightQuantizationOptions options = new() { Gptq = new GptqOptions { RangeSearch = new WeightRangeSearch() } };
        ArgumentException error = Assert.Throws<ArgumentException>(() => OnnxWeightQuantizer.Quantize(model, options));
        Assert.Contains("RangeSearch", error.Message, StringComparison.Ordinal);
    }
}
