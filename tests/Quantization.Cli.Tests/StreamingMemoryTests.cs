using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

using Xunit.Abstractions;

namespace Quantization.Cli.Tests;

/// <summary>
/// A Llama-shaped fp16 checkpoint of about 1.6 GB in four shards quantizes in a child process whose peak resident
/// memory (VmHWM) stays within twice the largest tensor plus 200 MB, whatever the checkpoint's size.
/// </summary>
public sealed partial class StreamingMemoryTests(ITestOutputHelper output) : IDisposable
{
    private const int Hidden = 2048, Intermediate = 5632, KvHidden = 256, Vocabulary = 32000, Layers = 16;

    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-llama-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    [Trait("Category", "Expensive")]
    public void LlamaShapedCheckpoint_QuantizesInBoundedMemory()
    {
        string input = Path.Combine(_directory, "fp16"), quantized = Path.Combine(_directory, "int8");
        (long total, long largest) = WriteLlama(input, shards: 4);
        Assert.True(total > 1_500_000_000, $"checkpoint of {total} bytes");

        (int code, string stdout, string stderr) = Ptq.Run("quantize", input, "-o", quantized, "--stats");
        Assert.True(code == 0, stderr);
        Match stats = StatsLine().Match(stdout);
        Assert.True(stats.Success, stdout);
        double seconds = double.Parse(stats.Groups["seconds"].Value, CultureInfo.InvariantCulture);
        long peak = long.Parse(stats.Groups["peak"].Value, CultureInfo.InvariantCulture) * 1_000_000;

        // The same bytes through a plain file copy, for scale.
        Stopwatch copy = Stopwatch.StartNew();
        string copied = Directory.CreateDirectory(Path.Combine(_directory, "copy")).FullName;
        foreach (string file in Directory.GetFiles(input))
        {
            File.Copy(file, Path.Combine(copied, Path.GetFileName(file)));
        }

        copy.Stop();
        long bound = (2 * largest) + 200_000_000;
        output.WriteLine(FormattableString.Invariant($"checkpoint {total / 1e9:F2} GB, largest tensor {largest / 1e6:F0} MB: peak RSS {peak / 1e6:F0} MB (bound {bound / 1e6:F0} MB), {total / 1e9 / seconds:F2} GB/s quantizing vs {total / 1e9 / copy.Elapsed.TotalSeconds:F2} GB/s copying"));
        Assert.True(peak <= bound, $"peak RSS {peak} bytes over the bound {bound}");
        Assert.Equal(4, Directory.GetFiles(quantized, "model-*.safetensors").Length);
    }

    /// <summary>Writes shards of random fp16 tensors with the shapes of a 1.1B Llama (16 layers) and their index.</summary>
    private static (long Total, long Largest) WriteLlama(string directory, int shards)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "config.json"), """{"model_type": "llama", "hidden_size": 2048}""");
        List<SafeTensorDescriptor> tensors = [new("model.embed_tokens.weight", SafeTensorDataType.Float16, [Vocabulary, Hidden])];
        for (int layer = 0; layer < Layers; layer++)
        {
            string prefix = $"model.layers.{layer}.";
            tensors.AddRange(
            [
                new(prefix + "self_attn.q_proj.weight", SafeTensorDataType.Float16, [Hidden, Hidden]),
                new(prefix + "self_attn.k_proj.weight", SafeTensorDataType.Float16, [KvHidden, Hidden]),
                new(prefix + "self_attn.v_proj.weight", SafeTensorDataType.Float16, [KvHidden, Hidden]),
                new(prefix + "self_attn.o_proj.weight", SafeTensorDataType.Float16, [Hidden, Hidden]),
                new(prefix + "mlp.gate_proj.weight", SafeTensorDataType.Float16, [Intermediate, Hidden]),
                new(prefix + "mlp.up_proj.weight", SafeTensorDataType.Float16, [Intermediate, Hidden]),
                new(prefix + "mlp.down_proj.weight", SafeTensorDataType.Float16, [Hidden, Intermediate]),
                new(prefix + "input_layernorm.weight", SafeTensorDataType.Float16, [Hidden]),
                new(prefix + "post_attention_layernorm.weight", SafeTensorDataType.Float16, [Hidden]),
            ]);
        }

        tensors.Add(new("model.norm.weight", SafeTensorDataType.Float16, [Hidden]));
        tensors.Add(new("lm_head.weight", SafeTensorDataType.Float16, [Vocabulary, Hidden]));

        static long Bytes(SafeTensorDescriptor t) => t.Shape.Aggregate(2L, (a, b) => a * b);
        long total = tensors.Sum(Bytes), perShard = (total / shards) + 1;
        List<List<SafeTensorDescriptor>> groups = [[]];
        long inShard = 0;
        foreach (SafeTensorDescriptor tensor in tensors)
        {
            if (inShard + Bytes(tensor) > perShard && groups[^1].Count > 0 && groups.Count < shards)
            {
                groups.Add([]);
                inShard = 0;
            }

            groups[^1].Add(tensor);
            inShard += Bytes(tensor);
        }

        // Random weights around ±0.05 in fp16, generated a megabyte at a time.
        Half[] block = new Half[1 << 19];
        Random random = new(7);
        for (int i = 0; i < block.Length; i++)
        {
            block[i] = (Half)((random.NextDouble() - 0.5) * 0.1);
        }

        Dictionary<string, string> map = [];
        for (int s = 0; s < groups.Count; s++)
        {
            string name = SafeTensorsCheckpoint.ShardFileName(s, groups.Count);
            using SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(directory, name), groups[s]);
            for (long left = writer.DataLength; left > 0; left -= Math.Min(left, block.Length * 2L))
            {
                writer.Write<Half>(block.AsSpan(0, (int)Math.Min(left / 2, block.Length)));
            }

            writer.Commit();
            groups[s].ForEach(t => map[t.Name] = name);
        }

        SafeTensorsCheckpoint.WriteIndex(Path.Combine(directory, SafeTensorsCheckpoint.IndexFileName), map, total);
        return (total, tensors.Max(Bytes));
    }

    [GeneratedRegex(@"in (?<seconds>[0-9.]+) s .*peak resident memory (?<peak>[0-9]+) MB")]
    private static partial Regex StatsLine();
}
