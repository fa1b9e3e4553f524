using System.Globalization;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Samples;

using Xunit.Abstractions;

namespace Quantization.Onnx.Tests;

/// <summary>
/// AWQ on all-MiniLM-L6-v2, weight-only int4 in blocks of 32 written as MatMulNBits: calibrated on the first 100 shipped
/// sentences, compared with fp32 on the other 200.
/// </summary>
public class MiniLMAwqTests(ITestOutputHelper output)
{
    private readonly MiniLMEvaluation _evaluation = new(output);

    [Fact]
    public async Task Int4Blocks_Awq_BeatsRoundingToNearest()
    {
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(32);
        byte[] original = MiniLM.LoadModel();
        float[][] reference = _evaluation.Embed(original, GraphOptimizationLevel.ORT_ENABLE_BASIC);

        OnnxModel scaled = OnnxModel.Parse(original);
        OnnxAwqResult result = await OnnxAwq.ApplyAsync(scaled, _evaluation.Calibration, new AwqOptions { Scheme = scheme });
        Describe(result);

        // Every MatMul/Gemm with a constant weight is in a group (the attention output, FFN down and the pooler through an
        // explicit Mul): 4 per layer and the pooler. Of each layer's Q, K and V, the query and key projections are
        // recognised (their outputs meet in the MatMul before the Softmax) and not clipped.
        Assert.Empty(result.Skipped);
        Assert.Equal(25, result.Groups.Count);
        Assert.Equal(6, result.Groups.Count(g => g.Consumers.Count == 3));
        Assert.All(result.Groups, g => Assert.Equal(g.Consumers.Count == 3 ? 2 : 0, g.Unclipped.Count));

        // The option does the same as AWQ followed by the quantizer.
        OnnxModel viaOption = OnnxModel.Parse(original);
        await OnnxWeightQuantizer.QuantizeAsync(viaOption, _evaluation.Calibration, Options(level: 1, gptq: false, awq: true));
        OnnxModel afterAwq = OnnxModel.Parse(scaled.Proto.ToByteArray());
        await OnnxWeightQuantizer.QuantizeAsync(afterAwq, _evaluation.Calibration, Options(level: 1, gptq: false, awq: false));
        Assert.Equal(afterAwq.Proto.ToByteArray(), viaOption.Proto.ToByteArray());

        Dictionary<string, double[]> basic = [], all = [];
        foreach ((string label, byte[] source, bool gptq) in new[] { ("RTN", original, false), ("AWQ", scaled.Proto.ToByteArray(), false), ("AWQ + GPTQ", scaled.Proto.ToByteArray(), true) })
        {
            foreach (int level in new[] { 1, 4 })
            {
                OnnxModel model = OnnxModel.Parse(source);
                await OnnxWeightQuantizer.QuantizeAsync(model, _evaluation.Calibration, Options(level, gptq, awq: false));
                byte[] bytes = model.Proto.ToByteArray();
                basic[$"{label} {level}"] = _evaluation.Report($"{label} int4 block 32, accuracy level {level}, basic level", reference, _evaluation.Embed(bytes, GraphOptimizationLevel.ORT_ENABLE_BASIC));
                all[$"{label} {level}"] = _evaluation.Report($"{label} int4 block 32, accuracy level {level}, default level", reference, _evaluation.Embed(bytes, GraphOptimizationLevel.ORT_ENABLE_ALL));
            }
        }

        // Measured (accuracy level 1, basic level, mean / worst cosine; bias correction on): RTN 0.962 / 0.938, AWQ
        // 0.972 / 0.956, AWQ then GPTQ 0.984 / 0.968. Short of the issue's 0.99: the query/key/value group costs the most
        // (its errors pass through the softmax, which the per-layer loss does not see).
        Assert.True(basic["AWQ 1"].Average() > basic["RTN 1"].Average() + 0.005, $"AWQ: mean cosine {basic["AWQ 1"].Average()}, RTN {basic["RTN 1"].Average()}");
        Assert.True(basic["AWQ 1"].Min() > basic["RTN 1"].Min(), $"AWQ: worst cosine {basic["AWQ 1"].Min()}, RTN {basic["RTN 1"].Min()}");
        Assert.True(all["AWQ 4"].Average() > all["RTN 4"].Average(), $"AWQ, default level: mean cosine {all["AWQ 4"].Average()}, RTN {all["RTN 4"].Average()}");

        OnnxWeightQuantizationOptions Options(int level, bool gptq, bool awq) => new()
        {
            Scheme = scheme,
            MatMulNBits = new MatMulNBitsOptions { BlockSize = 32, AccuracyLevel = level },
            Gptq = gptq ? new GptqOptions { ActivationOrder = true } : null,
            Awq = awq ? new AwqOptions() : null,
        };
    }

    private void Describe(OnnxAwqResult result)
    {
        foreach (OnnxAwqGroup g in result.Groups)
        {
            output.WriteLine(Invariant($"  {g.Input} ({g.ProducerKind}) -> {string.Join(", ", g.Consumers)}: α {g.Alpha:F2} (error {g.SearchErrors[g.Alpha]:G3}, at α 0 {g.SearchErrors[0]:G3}), clip {string.Join(", ", g.ClipRatios.Select(c => Invariant($"{c.Value:F3}")))}"));
        }

        foreach (OnnxSkippedScaleGroup s in result.Skipped)
        {
            output.WriteLine($"  skipped {s.Input} ({string.Join(", ", s.Consumers)}): {s.Reason}");
        }
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
