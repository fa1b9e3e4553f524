using System.Buffers.Binary;
using System.Text;

namespace Quantization.Tests.SafeTensors;

/// <summary>The safetensors header is hostile input: every malformed file is refused with an <see cref="InvalidDataException"/> that names the file and the problem.</summary>
public sealed class HostileSafeTensorsTests : IDisposable
{
    private const string Valid = """{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"I8","shape":[4],"data_offsets":[16,20]}}""";

    private readonly string _directory = Directory.CreateTempSubdirectory("hostile-safetensors-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    public static TheoryData<string, string, int, string> Headers() => new()
    {
        { "not JSON", "hello", 20, "not valid JSON" },
        { "empty header", "", 20, "not valid JSON" },
        { "array", "[]", 20, "not a JSON object" },
        { "truncated JSON", """{"a":{"dtype":"F32","shape":[2,2],""", 20, "not valid JSON" },
        { "trailing content", Valid + " {}", 20, "not valid JSON" },
        { "repeated tensor", """{"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"I8","shape":[4],"data_offsets":[4,8]}}""", 8, "appears twice" },
        { "unknown dtype", """{"a":{"dtype":"F12","shape":[4],"data_offsets":[0,4]}}""", 4, "unknown dtype 'F12'" },
        { "dtype not a string", """{"a":{"dtype":4,"shape":[4],"data_offsets":[0,4]}}""", 4, "dtype that is not a string" },
        { "negative dimension", """{"a":{"dtype":"I8","shape":[-4],"data_offsets":[0,4]}}""", 4, "not a non-negative 64-bit integer" },
        { "fractional dimension", """{"a":{"dtype":"I8","shape":[1.5],"data_offsets":[0,4]}}""", 4, "not a non-negative 64-bit integer" },
        { "dimension as a string", """{"a":{"dtype":"I8","shape":["4"],"data_offsets":[0,4]}}""", 4, "not a number" },
        { "shape not an array", """{"a":{"dtype":"I8","shape":4,"data_offsets":[0,4]}}""", 4, "not an array" },
        { "shape product overflows", """{"a":{"dtype":"F64","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,4]}}""", 4, "more bytes than a file can hold" },
        { "dimension past int64", """{"a":{"dtype":"I8","shape":[18446744073709551616],"data_offsets":[0,4]}}""", 4, "not a non-negative 64-bit integer" },
        { "65 dimensions", "{\"a\":{\"dtype\":\"I8\",\"shape\":[" + string.Join(",", Enumerable.Repeat("1", 65)) + "],\"data_offsets\":[0,1]}}", 1, "more than 64" },
        { "three offsets", """{"a":{"dtype":"I8","shape":[4],"data_offsets":[0,2,4]}}""", 4, "not [begin, end]" },
        { "begin after end", """{"a":{"dtype":"I8","shape":[4],"data_offsets":[4,0]}}""", 4, "not [begin, end]" },
        { "negative offset", """{"a":{"dtype":"I8","shape":[4],"data_offsets":[-4,0]}}""", 4, "not a non-negative 64-bit integer" },
        { "offsets past the data", """{"a":{"dtype":"I8","shape":[4],"data_offsets":[8,12]}}""", 4, "past the end of the data" },
        { "shape and bytes disagree", """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,4]}}""", 4, "hold 4" },
        { "overlapping tensors", """{"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[4],"data_offsets":[2,6]}}""", 6, "overlaps" },
        { "gap between tensors", """{"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"I8","shape":[2],"data_offsets":[4,6]}}""", 6, "gap of 2 bytes" },
        { "bytes after the last tensor", """{"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}""", 6, "data section has 6 bytes" },
        { "missing dtype", """{"a":{"shape":[4],"data_offsets":[0,4]}}""", 4, "lacks one of" },
        { "missing offsets", """{"a":{"dtype":"I8","shape":[4]}}""", 4, "lacks one of" },
        { "unknown field", """{"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4],"extra":1}}""", 4, "unexpected or repeated field 'extra'" },
        { "repeated field", """{"a":{"dtype":"I8","dtype":"I8","shape":[4],"data_offsets":[0,4]}}""", 4, "unexpected or repeated field 'dtype'" },
        { "tensor not an object", """{"a":"I8"}""", 4, "is not an object" },
        { "metadata not an object", """{"__metadata__":"pt"}""", 0, "is not an object" },
        { "metadata value not a string", """{"__metadata__":{"format":1}}""", 0, "is not a string" },
        { "dtype an object", """{"a":{"dtype":{"x":{"y":1}},"shape":[4],"data_offsets":[0,4]}}""", 4, "dtype that is not a string" },
        { "nested too deep", """{"a":{"dtype":"I8","shape":[[[[4]]]],"data_offsets":[0,4]}}""", 4, "maximum configured depth of 3" },
        { "null byte before JSON", "\0" + Valid, 20, "not valid JSON" },
    };

    [Theory]
    [MemberData(nameof(Headers))]
    public void MalformedHeader_IsRefusedByName(string label, string header, int dataBytes, string problem)
    {
        string path = Write(label, Encoding.UTF8.GetBytes(header), dataBytes);
        InvalidDataException e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
        Assert.Contains(Path.GetFileName(path), e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ValidHeader_Opens()
    {
        using SafeTensorsFile file = SafeTensorsFile.Open(Write("valid", Encoding.UTF8.GetBytes(Valid), 20));
        Assert.Equal(["a", "b"], file.Tensors.Select(t => t.Name));
    }

    [Fact]
    public void BadLengthsAndEncodings_AreRefused()
    {
        string[] problems =
        [
            Refuse("empty", []),
            Refuse("seven bytes", new byte[7]),
            Refuse("length past the file", Length(1000).Concat(new byte[10]).ToArray()),
            Refuse("length past 100 MB", Length(200_000_000).Concat(new byte[10]).ToArray()),
            Refuse("length with the top bit set", Length(ulong.MaxValue).Concat(new byte[10]).ToArray()),
            Refuse("invalid UTF-8 in a name", [.. Length(8), .. "{\""u8, 0xFF, 0xFE, .. "\":1}"u8]),
        ];
        Assert.Contains("too short", problems[0], StringComparison.Ordinal);
        Assert.Contains("too short", problems[1], StringComparison.Ordinal);
        Assert.All(problems[2..5], p => Assert.Contains("the header claims", p, StringComparison.Ordinal));
        Assert.Contains("not valid JSON", problems[5], StringComparison.Ordinal);

        string Refuse(string label, byte[] bytes)
        {
            string path = Path.Combine(_directory, label + ".safetensors");
            File.WriteAllBytes(path, bytes);
            return Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path)).Message;
        }
    }

    [Fact]
    public void RandomMutations_AreRefusedCleanly_OrReadConsistently()
    {
        // Flip, insert, delete and truncate bytes of a valid file: every result either opens, and then every tensor
        // reads within the file, or is refused with InvalidDataException. Nothing else may escape.
        byte[] valid = File.ReadAllBytes(Write("seed", Encoding.UTF8.GetBytes(Valid), 20));
        Random random = new(20261127);
        string path = Path.Combine(_directory, "mutant.safetensors");
        int opened = 0, refused = 0;
        for (int i = 0; i < 3000; i++)
        {
            List<byte> bytes = [.. valid];
            for (int m = random.Next(1, 4); m > 0 && bytes.Count > 0; m--)
            {
                int at = random.Next(bytes.Count);
                switch (random.Next(4))
                {
                    case 0: bytes[at] = (byte)random.Next(256); break;
                    case 1: bytes.Insert(at, (byte)"{}[],:\"0123456789-eE. \0"[random.Next(23)]); break;
                    case 2: bytes.RemoveAt(at); break;
                    default: bytes.RemoveRange(at, bytes.Count - at); break;
                }
            }

            File.WriteAllBytes(path, [.. bytes]);
            try
            {
                using SafeTensorsFile file = SafeTensorsFile.Open(path);
                Assert.Equal(bytes.Count, file.Tensors.Sum(t => t.Length) + file.Tensors.Select(t => t.Offset).DefaultIfEmpty(bytes.Count).Min());
                foreach (SafeTensorInfo tensor in file.Tensors)
                {
                    Assert.Equal(tensor.Length, file.GetBytes(tensor.Name).Length);
                }

                opened++;
            }
            catch (InvalidDataException)
            {
                refused++;
            }
        }

        Assert.True(refused > 2000 && opened > 0, $"{opened} opened, {refused} refused");
    }

    private static byte[] Length(ulong length)
    {
        byte[] bytes = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length);
        return bytes;
    }

    private string Write(string label, byte[] header, int dataBytes)
    {
        string path = Path.Combine(_directory, label.Replace(' ', '-') + ".safetensors");
        File.WriteAllBytes(path, [.. Length((ulong)header.Length), .. header, .. new byte[dataBytes]]);
        return path;
    }
}
