using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Samples;

using Xunit.Abstractions;

namespace Quantization.Onnx.Tests;

/// <summary>
/// The int4 issue's bar on all-MiniLM-L6-v2: weight-only int4 in blocks of 32 written as MatMulNBits, calibrated on the
/// first 100 shipped sentences and compared with fp32 on the other 200.
/// </summary>
public class MiniLMInt4Tests(ITestOutputHelper output)
{
    private readonly MiniLMEvaluation _evaluation = new(output);

    [Fact]
    public async Task Int4Blocks_RoundedToNearestAndByGptq()
    {
        byte[] original = MiniLM.LoadModel();
        float[][] reference = _evaluation.Embed(original, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        Dictionary<string, double[]> basic = [], all = [];
        foreach ((string label, GptqOptions? gptq) in new[] { ("RTN", (GptqOptions?)null), ("GPTQ", new GptqOptions { ActivationOrder = true }) })
        {
            foreach (int level in new[] { 1, 4 })
            {
                OnnxModel model = OnnxModel.Parse(original);
                OnnxWeightQuantizationOptions options = new()
                {
                    Scheme = QuantizationScheme.Int4PerGroup(32),
                    MatMulNBits = new MatMulNBitsOptions { BlockSize = 32, AccuracyLevel = level },
                    Gptq = gptq,
                };
                IReadOnlyList<OnnxWeightReport> weights = await OnnxWeightQuantizer.QuantizeAsync(model, _evaluation.Calibration, options);
                Assert.Equal(37, model.Proto.Graph.Node.Count(n => n.OpType == "MatMulNBits" && n.Attribute.Single(a => a.Name == "bits").I == 4));
                byte[] bytes = model.Proto.ToByteArray();
                output.WriteLine(FormattableString.Invariant($"{label} int4 block 32, accuracy level {level}: weight SQNR mean {weights.Average(w => w.Report.SqnrDb):F2} dB, {bytes.Length:N0} bytes ({(double)bytes.Length / original.Length:F3}x fp32)"));
                basic[$"{label} {level}"] = _evaluation.Report($"{label} int4 block 32, accuracy level {level}, basic level", reference, _evaluation.Embed(bytes, GraphOptimizationLevel.ORT_ENABLE_BASIC));
                all[$"{label} {level}"] = _evaluation.Report($"{label} int4 block 32, accuracy level {level}, default level", reference, _evaluation.Embed(bytes, GraphOptimizationLevel.ORT_ENABLE_ALL));
            }
        }

        Assert.True(basic["GPTQ 1"].Average() >= 0.99, $"GPTQ, basic level: mean cosine {basic["GPTQ 1"].Average()}");
        Assert.True(all["GPTQ 4"].Average() >= 0.985, $"GPTQ, default level, int8 activations: mean cosine {all["GPTQ 4"].Average()}");
        Assert.True(basic["GPTQ 1"].Average() > basic["RTN 1"].Average(), "GPTQ recovers part of rounding's loss");
    }
}
